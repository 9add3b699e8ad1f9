/*
 * Interrupts through the in-kernel irqchip, three ways:
 *  1. the LAPIC timer, periodic, vector 0x30 (Intel SDM vol. 3, 10.5.4);
 *  2. the PIT (channel 0, mode 2, ~100 Hz) through IOAPIC pin 2 (ISA IRQ0 is
 *     wired to pin 2, as kvmlite's MADT override and MP table say), vector 0x20;
 *  3. the 16550 UART's THRE interrupt (ISA IRQ4, a device model raising a
 *     level through KVM_IRQ_LINE) through IOAPIC pin 4, vector 0x24.
 * Prints "lapic ok", "pit ok", "uart ok" and exits 0; a source that never
 * fires ends in a timeout and exit code 10+n.
 */
#include "idt.h"
#include "lib.h"

#define LAPIC 0xfee00000UL
#define IOAPIC 0xfec00000UL

static volatile u32 ticks[3];

static void lapic_write(u32 reg, u32 v) { mmio_write32(LAPIC + reg, v); }
static void eoi(void) { lapic_write(0xb0, 0); }

__attribute__((interrupt)) static void lapic_isr(struct interrupt_frame *f)
{
	(void)f;
	ticks[0]++;
	eoi();
}

__attribute__((interrupt)) static void pit_isr(struct interrupt_frame *f)
{
	(void)f;
	ticks[1]++;
	eoi();
}

__attribute__((interrupt)) static void uart_isr(struct interrupt_frame *f)
{
	(void)f;
	ticks[2]++;
	(void)inb(COM1 + 2);   /* IIR read acknowledges THRE */
	outb(COM1 + 1, 0);     /* and stop further THRE interrupts */
	eoi();
}

static void ioapic_route(int pin, u8 vector)
{
	mmio_write32(IOAPIC, 0x10 + 2 * pin + 1);
	mmio_write32(IOAPIC + 0x10, 0); /* destination: APIC id 0 */
	mmio_write32(IOAPIC, 0x10 + 2 * pin);
	mmio_write32(IOAPIC + 0x10, vector); /* fixed, physical, edge, high, unmasked */
}

static int wait_ticks(int i, u32 n)
{
	for (u32 spin = 0; spin < 200000; spin++) {
		if (ticks[i] >= n)
			return 1;
		__asm__ volatile("sti; hlt; cli");
	}
	return 0;
}

int main(void)
{
	set_gate(0x30, lapic_isr);
	set_gate(0x20, pit_isr);
	set_gate(0x24, uart_isr);
	load_idt();
	outb(0x21, 0xff); /* mask the 8259s: interrupts come through the IOAPIC */
	outb(0xa1, 0xff);
	lapic_write(0xf0, 0x1ff); /* SVR: enable, spurious vector 0xff */

	lapic_write(0x3e0, 0xb);              /* divide by 1 */
	lapic_write(0x320, 0x30 | (1 << 17)); /* periodic, vector 0x30 */
	lapic_write(0x380, 200000);
	if (!wait_ticks(0, 3))
		return 10;
	lapic_write(0x320, 1 << 16); /* mask */
	puts("lapic ok\n");

	ioapic_route(2, 0x20);
	outb(0x43, 0x34); /* channel 0, lobyte/hibyte, mode 2 */
	outb(0x40, 11932 & 0xff);
	outb(0x40, 11932 >> 8);
	if (!wait_ticks(1, 3))
		return 11;
	outb(0x43, 0x30); /* mode 0 with no count: the PIT stops ticking */
	puts("pit ok\n");

	ioapic_route(4, 0x24);
	outb(COM1 + 4, 0x08); /* MCR.OUT2 gates the UART's IRQ onto the bus */
	outb(COM1 + 1, 0x02); /* IER.ETBEI: THR is empty, so this raises IRQ4 */
	if (!wait_ticks(2, 1))
		return 12;
	puts("uart ok\n");
	return 0;
}

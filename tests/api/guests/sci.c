/* The ACPI power button seen by a guest: IOAPIC pin 9 (the FADT's SCI_INT, level,
 * active high) -> vector 0x29; PWRBTN_EN set in PM1_EN (port 0x602); prints "armed",
 * waits. On the SCI: PWRBTN_STS in PM1_STS (0x600) is checked and cleared
 * (write 1), "sci ok" printed, then ACPI S5 (PM1a_CNT 0x604): kvmlite exits 0. */
#include "idt.h"
#include "lib.h"

#define LAPIC 0xfee00000UL
#define IOAPIC 0xfec00000UL
#define PWRBTN (1 << 8)

static volatile u32 presses;

__attribute__((interrupt)) static void sci_isr(struct interrupt_frame *f)
{
	(void)f;
	if (inw(0x600) & PWRBTN) {
		outw(0x600, PWRBTN); /* write 1 to clear: the SCI line drops */
		presses++;
	}
	mmio_write32(LAPIC + 0xb0, 0); /* EOI */
}

int main(void)
{
	set_gate(0x29, sci_isr);
	load_idt();
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	mmio_write32(LAPIC + 0xf0, 0x1ff);
	mmio_write32(IOAPIC, 0x10 + 2 * 9 + 1);
	mmio_write32(IOAPIC + 0x10, 0);
	mmio_write32(IOAPIC, 0x10 + 2 * 9);
	mmio_write32(IOAPIC + 0x10, 0x29 | (1 << 15)); /* level, active high, unmasked */
	outw(0x602, PWRBTN);
	puts("armed\n");
	while (!presses)
		__asm__ volatile("sti; hlt; cli");
	puts("sci ok\n");
	outw(0x604, (5 << 10) | (1 << 13));
	for (;;)
		__asm__ volatile("hlt");
}

/*
 * Interrupts for the virtio-blk tiny guest: an IDT (Intel SDM vol. 3 §6.14.1), the local
 * APIC (§10.4.3 SVR, §10.5.4 timer, §10.8.5 EOI), MSI-X (PCI Local Bus 3.0 §6.8.2) with
 * messages aimed at the LAPIC (SDM §10.11: address 0xFEE00000 | dest << 12, data = vector,
 * fixed delivery, edge), and a periodic LAPIC timer as a watchdog so a lost completion
 * interrupt ends in a failure code rather than a hang.
 *
 * Included once by virtio_blk.c.
 */
#ifndef VBLK_IRQ_H
#define VBLK_IRQ_H

#include "idt.h"
#include "lib.h"
#include "vblk_pci.h"

#define LAPIC_BASE 0xfee00000UL
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_SVR_ENABLE 0x100
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INITIAL 0x380
#define LAPIC_TIMER_DIVIDE 0x3e0
#define LAPIC_TIMER_PERIODIC (1u << 17)
#define LAPIC_TIMER_DIV16 0x3
/* KVM's LAPIC timer counts a 1 GHz bus clock: 6.25e6 / (1e9 / 16) = 100 ms. */
#define WATCHDOG_COUNT 6250000u

#define VEC_QUEUE 0x40
#define VEC_CONFIG 0x41
#define VEC_WATCHDOG 0x42
#define VEC_SPURIOUS 0xff

#define MSIX_CAP_ID 0x11
#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_FUNCTION_MASK 0x4000
#define MSIX_CTRL_TABLE_SIZE 0x7ff
#define MSIX_ENTRY_SIZE 16
#define MSIX_ENTRY_CTRL_MASKED 0x1
#define MSI_ADDRESS_LAPIC 0xfee00000u /* destination APIC id 0, physical */

#define EXIT_EXCEPTION 40

struct interrupt_frame {
	u64 rip, cs, rflags, rsp, ss;
};

static volatile u32 queue_irqs, config_irqs, watchdog_ticks;

static void lapic_write(u32 reg, u32 v) { mmio_write32(LAPIC_BASE + reg, v); }
static u32 lapic_read(u32 reg) { return mmio_read32(LAPIC_BASE + reg); }
static void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }

__attribute__((interrupt)) static void queue_isr(struct interrupt_frame *f)
{
	(void)f;
	queue_irqs++;
	lapic_eoi();
}

__attribute__((interrupt)) static void config_isr(struct interrupt_frame *f)
{
	(void)f;
	config_irqs++;
	lapic_eoi();
}

__attribute__((interrupt)) static void watchdog_isr(struct interrupt_frame *f)
{
	(void)f;
	watchdog_ticks++;
	lapic_eoi();
}

/* The spurious vector takes no EOI (SDM §10.9). */
__attribute__((interrupt)) static void spurious_isr(struct interrupt_frame *f) { (void)f; }

/* A CPU exception is a bug in this guest: say which and where, then exit. For vectors that
 * push an error code the first word printed is that code, the second the RIP. */
static __attribute__((noreturn)) void exception(int vector, struct interrupt_frame *f)
{
	puts("vblk: FAIL exception ");
	put_hex(vector);
	puts(" at ");
	put_hex(f->rip);
	puts(" ");
	put_hex(f->cs);
	putc('\n');
	exit(EXIT_EXCEPTION);
}

#define EXCEPTION_STUB(n)                                                                     \
	__attribute__((interrupt)) static void exc##n(struct interrupt_frame *f) { exception(n, f); }
EXCEPTION_STUB(0) EXCEPTION_STUB(1) EXCEPTION_STUB(2) EXCEPTION_STUB(3) EXCEPTION_STUB(4)
EXCEPTION_STUB(5) EXCEPTION_STUB(6) EXCEPTION_STUB(7) EXCEPTION_STUB(8) EXCEPTION_STUB(9)
EXCEPTION_STUB(10) EXCEPTION_STUB(11) EXCEPTION_STUB(12) EXCEPTION_STUB(13) EXCEPTION_STUB(14)
EXCEPTION_STUB(15) EXCEPTION_STUB(16) EXCEPTION_STUB(17) EXCEPTION_STUB(18) EXCEPTION_STUB(19)

static void (*const exception_stubs[20])(struct interrupt_frame *) = {
	exc0, exc1, exc2, exc3, exc4, exc5, exc6, exc7, exc8, exc9,
	exc10, exc11, exc12, exc13, exc14, exc15, exc16, exc17, exc18, exc19,
};

/* IDT loaded, 8259s masked (SeaBIOS leaves IRQ0 on vector 8), LAPIC on, watchdog ticking.
 * Interrupts stay disabled except inside irq_wait(). */
static void irq_init(void)
{
	for (int v = 0; v < 20; v++)
		set_gate(v, exception_stubs[v]);
	set_gate(VEC_QUEUE, queue_isr);
	set_gate(VEC_CONFIG, config_isr);
	set_gate(VEC_WATCHDOG, watchdog_isr);
	set_gate(VEC_SPURIOUS, spurious_isr);
	load_idt();
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	lapic_write(LAPIC_SVR, (lapic_read(LAPIC_SVR) & ~0xffu) | LAPIC_SVR_ENABLE | VEC_SPURIOUS);
	lapic_write(LAPIC_TIMER_DIVIDE, LAPIC_TIMER_DIV16);
	lapic_write(LAPIC_LVT_TIMER, VEC_WATCHDOG | LAPIC_TIMER_PERIODIC);
	lapic_write(LAPIC_TIMER_INITIAL, WATCHDOG_COUNT);
}

/*
 * Sleep until an interrupt arrives. "sti; hlt" is race-free: STI holds interrupts off
 * for one more instruction (SDM §6.8.3), so one that became pending after the caller
 * checked its condition wakes the HLT instead of being taken before it.
 */
static void irq_wait(void) { __asm__ volatile("sti; hlt; cli" ::: "memory"); }

/*
 * Point MSI-X table entries 0 (config) and 1 (queue 0) at the LAPIC and enable MSI-X.
 * The function mask is held while the table is written (§6.8.2.3). Returns 0, or -1
 * when the capability is missing, too small, or its table is not in a usable BAR.
 */
static int msix_init(struct pci_fn f)
{
	u8 cap = pci_next_cap(f, 0, MSIX_CAP_ID);
	if (!cap)
		return -1;
	u16 ctrl = pci_read16(f, cap + 2);
	if ((ctrl & MSIX_CTRL_TABLE_SIZE) + 1 < 2)
		return -1;
	u32 table = pci_read32(f, cap + 4);
	u64 bar = pci_bar_address(f, table & 7);
	if (!bar)
		return -1;
	u64 base = bar + (table & ~7u);

	pci_write16(f, cap + 2, ctrl | MSIX_CTRL_ENABLE | MSIX_CTRL_FUNCTION_MASK);
	static const u8 vectors[2] = {VEC_CONFIG, VEC_QUEUE};
	for (int i = 0; i < 2; i++) {
		u64 e = base + i * MSIX_ENTRY_SIZE;
		mmio_write32(e + 0, MSI_ADDRESS_LAPIC);
		mmio_write32(e + 4, 0);
		mmio_write32(e + 8, vectors[i]);
		mmio_write32(e + 12, mmio_read32(e + 12) & ~MSIX_ENTRY_CTRL_MASKED);
	}
	pci_write16(f, cap + 2, (ctrl | MSIX_CTRL_ENABLE) & ~MSIX_CTRL_FUNCTION_MASK);
	return 0;
}

#endif

/*
 * SMP bring-up through the in-kernel LAPIC (Intel SDM vol. 3, 8.4.4 "MP
 * initialization example"): the BSP sends INIT, SIPI, SIPI to all other CPUs;
 * each AP starts in real mode at the SIPI vector's page, reads its initial
 * APIC id from CPUID leaf 1 EBX[31:24] and sets that bit in a shared mask.
 * The BSP waits for the mask to hold every CPU named by "cpus=N" on the
 * command line, prints "smp mask=<hex>" and exits 0 (1 on a timeout).
 */
#include "lib.h"

#define LAPIC 0xfee00000UL
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define ICR_INIT_ALL_BUT_SELF 0x000c4500
#define ICR_SIPI_ALL_BUT_SELF 0x000c4600
#define TRAMPOLINE 0x10000 /* SIPI vector 0x10; below kvmlite's cmdline at 0x20000 */
#define AP_MASK (TRAMPOLINE + 0x1000)

extern char tramp_start[], tramp_end[];
__asm__(".code16\n"
	"tramp_start:\n"
	"  cli\n"
	"  mov $0x1000, %ax\n" /* DS base 0x10000 */
	"  mov %ax, %ds\n"
	"  mov $1, %eax\n"
	"  cpuid\n"
	"  shr $24, %ebx\n"
	"  mov %bl, %cl\n"
	"  mov $1, %eax\n"
	"  shl %cl, %eax\n"
	"  lock orl %eax, 0x1000\n" /* AP_MASK */
	"1: hlt\n"
	"  jmp 1b\n"
	"tramp_end:\n"
	".code64\n");

static void lapic_write(u32 reg, u32 v) { mmio_write32(LAPIC + reg, v); }
static u32 lapic_read(u32 reg) { return mmio_read32(LAPIC + reg); }

static void delay(u32 n)
{
	for (volatile u32 i = 0; i < n; i++)
		;
}

static u32 cmdline_uint(const char *s, const char *key)
{
	for (; *s; s++) {
		const char *k = key, *p = s;
		while (*k && *p == *k)
			k++, p++;
		if (!*k) {
			u32 v = 0;
			while (*p >= '0' && *p <= '9')
				v = v * 10 + (u32)(*p++ - '0');
			return v;
		}
	}
	return 0;
}

int main(struct hvm_start_info *si)
{
	u32 cpus = si ? cmdline_uint((const char *)si->cmdline_paddr, "cpus=") : 0;
	u32 want = cpus >= 32 ? 0xffffffffu : (1u << cpus) - 1;
	volatile u32 *mask = (volatile u32 *)AP_MASK;

	memcpy((void *)TRAMPOLINE, tramp_start, (unsigned long)(tramp_end - tramp_start));
	*mask = 1u << (lapic_read(0x20) >> 24); /* the BSP's own APIC id */
	lapic_write(LAPIC_SVR, lapic_read(LAPIC_SVR) | 0x100);
	lapic_write(LAPIC_ICR_HI, 0);
	lapic_write(LAPIC_ICR_LO, ICR_INIT_ALL_BUT_SELF);
	delay(1000);
	for (int i = 0; i < 2; i++) {
		lapic_write(LAPIC_ICR_LO, ICR_SIPI_ALL_BUT_SELF | (TRAMPOLINE >> 12));
		delay(200);
	}
	for (u32 spin = 0; *mask != want && spin < 2000000; spin++)
		;
	puts("smp mask=");
	put_hex(*mask);
	putc('\n');
	return *mask == want ? 0 : 1;
}

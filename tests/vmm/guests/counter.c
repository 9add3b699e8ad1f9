/*
 * The snapshot tests' guest: counts for ever and prints each count on COM1,
 * "count=<16 hex digits>\n", with a delay loop between two lines. With
 * "cpus=2" on the command line the BSP first starts the other CPU (INIT,
 * SIPI, SIPI: Intel SDM vol. 3, 8.4.4, as smp.c does), which counts in real
 * mode in a word of memory; the BSP then prints both counts,
 * "count=<hex> ap=<hex>\n". A restored snapshot must go on from the last
 * count printed: no reset, no repeat, on every CPU.
 */
#include "lib.h"

#define LAPIC 0xfee00000UL
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define ICR_INIT_ALL_BUT_SELF 0x000c4500
#define ICR_SIPI_ALL_BUT_SELF 0x000c4600
#define TRAMPOLINE 0x10000 /* SIPI vector 0x10; below kvmlite's cmdline at 0x20000 */
#define AP_COUNT (TRAMPOLINE + 0x1000)

extern char tramp_start[], tramp_end[];
__asm__(".code16\n"
	"tramp_start:\n"
	"  cli\n"
	"  mov $0x1000, %ax\n" /* DS base 0x10000 */
	"  mov %ax, %ds\n"
	"1: lock incl 0x1000\n" /* AP_COUNT */
	"  mov $2000, %cx\n"
	"2: loop 2b\n"
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

static int has_cpus2(const char *s)
{
	for (; s && *s; s++)
		if (s[0] == 'c' && s[1] == 'p' && s[2] == 'u' && s[3] == 's' && s[4] == '=' &&
		    s[5] == '2')
			return 1;
	return 0;
}

static volatile u64 count;

int main(struct hvm_start_info *si)
{
	int smp = si && has_cpus2((const char *)si->cmdline_paddr);
	volatile u32 *ap = (volatile u32 *)AP_COUNT;

	if (smp) {
		memcpy((void *)TRAMPOLINE, tramp_start, (unsigned long)(tramp_end - tramp_start));
		*ap = 0;
		lapic_write(LAPIC_SVR, lapic_read(LAPIC_SVR) | 0x100);
		lapic_write(LAPIC_ICR_HI, 0);
		lapic_write(LAPIC_ICR_LO, ICR_INIT_ALL_BUT_SELF);
		delay(1000);
		for (int i = 0; i < 2; i++) {
			lapic_write(LAPIC_ICR_LO, ICR_SIPI_ALL_BUT_SELF | (TRAMPOLINE >> 12));
			delay(200);
		}
	}
	for (;;) {
		count++;
		puts("count=");
		put_hex(count);
		if (smp) {
			puts(" ap=");
			put_hex(*ap);
		}
		putc('\n');
		delay(5000);
	}
}

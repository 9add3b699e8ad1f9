/* Enters ACPI S5 the way Linux does: SLP_TYP (the \_S5_ value, 5) and SLP_EN
 * written to PM1a_CNT (ACPI 6.4 §4.8.3.2.1, kvmlite's FADT puts it at port
 * 0x604); kvmlite ends with the "poweroff" status. */
#include "lib.h"

int main(void)
{
	outw(0x604, (5 << 10) | (1 << 13));
	for (;;)
		__asm__ volatile("hlt");
}

/* Prints an increasing counter on COM1, one hex number a line ("c 0000000000000001"),
 * forever, with a short busy wait between lines: a guest paused and resumed must go
 * on with the next number (no gap, no repeat). */
#include "lib.h"

int main(struct hvm_start_info *si)
{
	(void)si;
	for (u64 n = 1;; n++) {
		puts("c ");
		put_hex(n);
		putc('\n');
		for (volatile u32 i = 0; i < 2000; i++)
			;
	}
}

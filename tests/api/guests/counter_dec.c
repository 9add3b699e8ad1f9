/*
 * Prints 0, 1, 2, ... on COM1, one decimal number a line, forever, with a short
 * busy wait between lines: the pause/resume tests check the sequence for a gap
 * or a repeat around a pause.
 */
#include "lib.h"

#define DELAY 2000

static void put_dec(u64 v)
{
	char buf[21];
	int i = 20;

	buf[i] = 0;
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	puts(buf + i);
}

int main(struct hvm_start_info *si)
{
	(void)si;
	for (u64 n = 0;; n++) {
		put_dec(n);
		putc('\n');
		for (volatile u32 i = 0; i < DELAY; i++)
			;
	}
}

/*
 * Port-I/O exit benchmark: reads N with a 4-byte IN from port 0x511, then does N
 * 1-byte OUTs of (i & 0xff) to port 0x510, then exits with status 0.
 */
#include "lib.h"

int main(struct hvm_start_info *si)
{
	(void)si;
	u32 n = inl(0x511);
	for (u32 i = 0; i < n; i++)
		outb(0x510, (u8)i);
	return 0;
}

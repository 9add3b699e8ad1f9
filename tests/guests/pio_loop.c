/*
 * Port-I/O exit benchmark: N 1-byte OUTs of (i & 0xff) to port 0x510, then exit 0.
 * N is the decimal PVH command line when there is one (so QEMU can run the same
 * work with -append N), else the answer to a 4-byte IN from port 0x511.
 */
#include "lib.h"

static u32 parse_u32(const char *s)
{
	u32 n = 0;
	while (*s >= '0' && *s <= '9')
		n = n * 10 + (u32)(*s++ - '0');
	return n;
}

int main(struct hvm_start_info *si)
{
	u32 n;
	if (si && si->magic == HVM_START_MAGIC_VALUE && si->cmdline_paddr)
		n = parse_u32((const char *)si->cmdline_paddr);
	else
		n = inl(0x511);
	for (u32 i = 0; i < n; i++)
		outb(0x510, (u8)i);
	return 0;
}

/*
 * MMIO exits outside RAM, at MMIO_BASE = 0xd0000000:
 *   write32 0x12345678 to +0; v = read32 +4; write8 0xab to +8; q = read64 +16;
 *   write16 0xbeef to +0x20;
 * then echoes v with a 4-byte OUT to port 0x512 and q as two 4-byte OUTs
 * (low, high) to port 0x513, and exits with status 0.
 */
#include "lib.h"

#define MMIO_BASE 0xd0000000UL

int main(struct hvm_start_info *si)
{
	(void)si;
	mmio_write32(MMIO_BASE, 0x12345678);
	u32 v = mmio_read32(MMIO_BASE + 4);
	mmio_write8(MMIO_BASE + 8, 0xab);
	u64 q = mmio_read64(MMIO_BASE + 16);
	mmio_write16(MMIO_BASE + 0x20, 0xbeef);
	outl(0x512, v);
	outl(0x513, (u32)q);
	outl(0x513, (u32)(q >> 32));
	return 0;
}

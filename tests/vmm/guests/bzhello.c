/*
 * Entered through the bzImage 64-bit boot protocol: prints
 * "bzimage e820=<n> cmdline=<cmdline>" from the zero page (boot_params:
 * e820_entries at 0x1e8, hdr.cmd_line_ptr at 0x228, per boot.rst and
 * arch/x86/include/uapi/asm/bootparam.h) and exits 0 if both look sane.
 */
#include "lib.h"

int main(u8 *boot_params)
{
	u8 e820 = boot_params[0x1e8];
	const char *cmdline = (const char *)(u64) * (u32 *)(boot_params + 0x228);

	puts("bzimage e820=");
	put_hex(e820);
	puts(" cmdline=");
	puts(cmdline);
	putc('\n');
	return e820 > 0 && *(u32 *)(boot_params + 0x202) == 0x53726448 /* "HdrS" */ ? 0 : 1;
}

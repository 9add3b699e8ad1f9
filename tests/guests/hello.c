/*
 * Prints "hello\n" on COM1 and exits with status 0 through the debug-exit port.
 * Booted through PVH it also prints "pvh " and the command line from hvm_start_info.
 */
#include "lib.h"

int main(struct hvm_start_info *si)
{
	puts("hello\n");
	if (si && si->magic == HVM_START_MAGIC_VALUE) {
		puts("pvh ");
		if (si->cmdline_paddr)
			puts((const char *)si->cmdline_paddr);
		putc('\n');
	}
	return 0;
}

/*
 * Writes 'C' to COM1, then executes UD2. The IDT has limit 0, so #UD cannot be
 * delivered: #GP, #DF, triple fault -> KVM_EXIT_SHUTDOWN.
 */
#include "lib.h"

int main(struct hvm_start_info *si)
{
	(void)si;
	putc('C');
	__asm__ volatile("ud2");
	return 1;
}

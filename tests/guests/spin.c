/* Writes 'S' to COM1, then spins forever without exits (for stopping a vCPU by signal). */
#include "lib.h"

int main(struct hvm_start_info *si)
{
	(void)si;
	putc('S');
	for (;;)
		__asm__ volatile("" ::: "memory");
}

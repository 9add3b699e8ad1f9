/* Writes 'H' to COM1 and halts forever (every HLT is a KVM_EXIT_HLT without irqchip). */
#include "lib.h"

int main(struct hvm_start_info *si)
{
	(void)si;
	putc('H');
	for (;;)
		__asm__ volatile("hlt");
}

/* Pulses the CPU reset line through the i8042 (command 0xFE on port 0x64), as
 * Linux's reboot=k does; kvmlite ends with the "reboot" status. */
#include "lib.h"

int main(void)
{
	outb(0x64, 0xfe);
	for (;;)
		__asm__ volatile("hlt");
}

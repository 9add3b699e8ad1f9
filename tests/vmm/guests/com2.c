/* Writes "com2 ok" to COM2 (port 0x2f8) and the value of COM2's scratch
 * register after a write (0xff when no UART answers) to COM1, then exits 0. */
#include "lib.h"

int main(void)
{
	const char *s = "com2 ok\n";
	while (*s)
		outb(0x2f8, (u8)*s++);
	outb(0x2f8 + 7, 0x5a);
	puts("scratch=");
	put_hex(inb(0x2f8 + 7));
	putc('\n');
	return 0;
}

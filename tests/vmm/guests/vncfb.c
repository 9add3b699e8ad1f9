/*
 * The VNC test guest (bzImage 64-bit entry, RSI = boot_params). It reads the
 * framebuffer from screen_info (include/uapi/linux/screen_info.h: isVGA at
 * 0x0f, lfb_width 0x12, lfb_height 0x14, lfb_depth 0x16, lfb_base 0x18,
 * lfb_linelength 0x24), prints "fb <base> <width> <height>", draws
 *   red = x * 7, green = y * 13 (mod 256), blue = 0xff on a 16x16 checker, 0 off it,
 * for x < width / 2, and a flat (0x20, 0xc0, 0x80) on the right half,
 * prints "drawn", then echoes every byte it reads from the i8042 (port 0x60
 * when bit 0 of port 0x64 is set) as "key <hex>" and paints the 8x8 square
 * at (0, 0) grey with that code in every channel (for the dirty-log test).
 * Scan code 0x01 (Escape, pressed) ends it with exit status 0. Exit 1: no
 * VESA framebuffer.
 */
#include "lib.h"

#define SI_ISVGA 0x0f
#define SI_WIDTH 0x12
#define SI_HEIGHT 0x14
#define SI_DEPTH 0x16
#define SI_BASE 0x18
#define SI_STRIDE 0x24
#define VIDEO_TYPE_VLFB 0x23

static void put_dec(u32 v)
{
	char buf[12];
	int i = 0;
	do {
		buf[i++] = '0' + v % 10;
		v /= 10;
	} while (v);
	while (i)
		putc(buf[--i]);
}

int main(u8 *bp)
{
	u32 width = *(u16 *)(bp + SI_WIDTH), height = *(u16 *)(bp + SI_HEIGHT);
	u32 stride = *(u16 *)(bp + SI_STRIDE);
	u64 base = *(u32 *)(bp + SI_BASE);

	if (bp[SI_ISVGA] != VIDEO_TYPE_VLFB || *(u16 *)(bp + SI_DEPTH) != 32)
		return 1;
	puts("fb ");
	put_hex(base);
	putc(' ');
	put_dec(width);
	putc(' ');
	put_dec(height);
	putc('\n');
	for (u32 y = 0; y < height; y++) {
		volatile u32 *row = (volatile u32 *)(base + (u64)y * stride);
		for (u32 x = 0; x < width; x++) {
			u32 r, g, b;
			if (x < width / 2) {
				r = (x * 7) & 0xff;
				g = (y * 13) & 0xff;
				b = ((x / 16 + y / 16) & 1) ? 0xff : 0;
			} else {
				r = 0x20, g = 0xc0, b = 0x80;
			}
			row[x] = r << 16 | g << 8 | b;
		}
	}
	puts("drawn\n");
	for (;;) {
		if (!(inb(0x64) & 1))
			continue;
		u8 code = inb(0x60);
		for (u32 y = 0; y < 8; y++)
			for (u32 x = 0; x < 8; x++)
				((volatile u32 *)(base + (u64)y * stride))[x] = code << 16 | code << 8 | code;
		puts("key ");
		put_hex(code);
		putc('\n');
		if (code == 0x01)
			return 0;
	}
}

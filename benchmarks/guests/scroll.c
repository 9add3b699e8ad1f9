/*
 * The VNC benchmark's guest (PVH): a text console that scrolls. It finds a
 * framebuffer: a bochs-display / std VGA (PCI 1234:1111, QEMU), set to
 * 640x480x32 through the Bochs VBE DISPI registers (ports 0x1ce/0x1cf) with
 * its LFB at BAR0; else kvmlite's linear framebuffer at 0xfd000000
 * (docs/vnc.md; PVH boots get no screen_info). After about a second it
 * scrolls STEPS times: the screen moves up one 16-pixel text row and a new
 * row of pseudo-random 8x16 "glyphs" is drawn at the bottom; "done", about a
 * second more, exit 0.
 */
#include "lib.h"

#define W 640
#define H 480
#define ROW 16
#define STEPS 15
#define KVMLITE_FB 0xfd000000UL

static u32 pci_read(u32 dev, u32 off)
{
	outl(0xcf8, 0x80000000u | dev << 11 | off);
	return inl(0xcfc);
}

static u64 find_fb(void)
{
	for (u32 dev = 0; dev < 32; dev++) {
		if (pci_read(dev, 0) != 0x11111234)
			continue;
		u32 cmd = pci_read(dev, 4);
		outl(0xcf8, 0x80000000u | dev << 11 | 4);
		outl(0xcfc, cmd | 2); /* memory decode on */
		u16 regs[][2] = {{4, 0}, {1, W}, {2, H}, {3, 32}, {4, 0x41}};
		for (int i = 0; i < 5; i++) {
			outw(0x1ce, regs[i][0]);
			outw(0x1cf, regs[i][1]);
		}
		return pci_read(dev, 0x10) & ~0xfUL;
	}
	return KVMLITE_FB;
}

static u32 seed = 12345;

static void text_row(volatile u64 *fb, u32 row)
{
	for (u32 c = 0; c < W / 8; c++) {
		seed = seed * 1103515245 + 12345;
		int blank = (seed >> 16) % 4 == 0;
		for (u32 y = 0; y < ROW; y++) {
			u32 bits = blank || y < 3 || y > 12 ? 0 : (seed >> (y % 8)) & 0x7e;
			volatile u64 *p = fb + ((row * ROW + y) * W + c * 8) / 2;
			for (u32 x = 0; x < 8; x += 2) {
				u64 a = bits >> x & 1 ? 0xaaaaaa : 0, b = bits >> (x + 1) & 1 ? 0xaaaaaa : 0;
				p[x / 2] = a | b << 32;
			}
		}
	}
}

int main(struct hvm_start_info *si)
{
	(void)si;
	volatile u64 *fb = (volatile u64 *)find_fb();
	for (u32 r = 0; r < H / ROW; r++)
		text_row(fb, r);
	puts("ready\n");
	for (volatile u32 i = 0; i < 300000; i++)
		;
	for (u32 s = 0; s < STEPS; s++) {
		for (u32 i = 0; i < (H - ROW) * W / 2; i++)
			fb[i] = fb[i + ROW * W / 2];
		text_row(fb, H / ROW - 1);
	}
	puts("done\n");
	for (volatile u32 i = 0; i < 300000; i++) /* time for the VMM's last updates */
		;
	return 0;
}

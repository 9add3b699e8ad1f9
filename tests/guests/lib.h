/*
 * The tiny guests' "libc": port and MMIO access, COM1 output, the PVH start_info
 * layout (xen/include/public/arch-x86/hvm/start_info.h) and kvmlite's debug-exit
 * convention (a 1-byte write of the exit code to port 0x501).
 */
#ifndef GUEST_LIB_H
#define GUEST_LIB_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

#define COM1 0x3f8
#define DEBUG_EXIT_PORT 0x501
#define HVM_START_MAGIC_VALUE 0x336ec578

struct hvm_start_info {
	u32 magic;
	u32 version;
	u32 flags;
	u32 nr_modules;
	u64 modlist_paddr;
	u64 cmdline_paddr;
	u64 rsdp_paddr;
	u64 memmap_paddr;
	u32 memmap_entries;
	u32 reserved;
};

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }

static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline u16 inw(u16 port)
{
	u16 v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline u32 inl(u16 port)
{
	u32 v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline u8 mmio_read8(u64 a) { return *(volatile u8 *)a; }
static inline u16 mmio_read16(u64 a) { return *(volatile u16 *)a; }
static inline u32 mmio_read32(u64 a) { return *(volatile u32 *)a; }
static inline u64 mmio_read64(u64 a) { return *(volatile u64 *)a; }
static inline void mmio_write8(u64 a, u8 v) { *(volatile u8 *)a = v; }
static inline void mmio_write16(u64 a, u16 v) { *(volatile u16 *)a = v; }
static inline void mmio_write32(u64 a, u32 v) { *(volatile u32 *)a = v; }
static inline void mmio_write64(u64 a, u64 v) { *(volatile u64 *)a = v; }

static inline void putc(char c) { outb(COM1, (u8)c); }

static inline void puts(const char *s)
{
	while (*s)
		putc(*s++);
}

static inline void put_hex(u64 v)
{
	for (int shift = 60; shift >= 0; shift -= 4)
		putc("0123456789abcdef"[(v >> shift) & 0xf]);
}

static inline __attribute__((noreturn)) void exit(u8 code)
{
	outb(DEBUG_EXIT_PORT, code);
	for (;;)
		__asm__ volatile("hlt");
}

/* gcc may emit calls to these even when freestanding. */
void *memset(void *d, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);

#endif

/*
 * PCI for the virtio-blk tiny guest: configuration mechanism #1 (ports 0xCF8/0xCFC,
 * PCI Local Bus 3.0 §3.2.2.3.2), a scan of bus 0, BAR reading and, where no firmware
 * assigned one, BAR placement (§6.2.5.1), and capability-list walking (§6.7).
 *
 * Included once by virtio_blk.c (the kit compiles one source file per guest).
 */
#ifndef VBLK_PCI_H
#define VBLK_PCI_H

#include "lib.h"

#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CONFIG_DATA 0xcfc

#define PCI_VENDOR_ID 0x00
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_CAP_PTR 0x34

#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_BAR_IO 0x1
#define PCI_BAR_TYPE_MASK 0x6
#define PCI_BAR_TYPE_64 0x4
#define PCI_BAR_MEM_MASK (~0xfUL)

/* Where this guest places BARs nobody assigned: above QEMU q35's MMCONFIG window (which
 * ends at 0xC0000000) and below the IOAPIC; SeaBIOS packs its BARs at the top of the
 * window, kvmlite from 0xC0100000, so the low end is free whenever we need it. */
#define BAR_ALLOC_BASE 0xc0000000UL
#define BAR_ALLOC_LIMIT 0xfec00000UL
/* start.S identity-maps the first 4 GiB only. */
#define ADDRESS_LIMIT 0x100000000UL

struct pci_fn {
	u8 bus, dev, fn;
};

static u64 bar_alloc_next = BAR_ALLOC_BASE;
static u32 bars_assigned; /* how many BARs this guest had to place itself */

static u32 pci_address(struct pci_fn f, u8 reg)
{
	return 0x80000000u | (u32)f.bus << 16 | (u32)f.dev << 11 | (u32)f.fn << 8 | (reg & 0xfc);
}

static u32 pci_read32(struct pci_fn f, u8 reg)
{
	outl(PCI_CONFIG_ADDRESS, pci_address(f, reg));
	return inl(PCI_CONFIG_DATA);
}

static u16 pci_read16(struct pci_fn f, u8 reg)
{
	outl(PCI_CONFIG_ADDRESS, pci_address(f, reg));
	return inw(PCI_CONFIG_DATA + (reg & 2));
}

static u8 pci_read8(struct pci_fn f, u8 reg)
{
	outl(PCI_CONFIG_ADDRESS, pci_address(f, reg));
	return inb(PCI_CONFIG_DATA + (reg & 3));
}

static void pci_write32(struct pci_fn f, u8 reg, u32 v)
{
	outl(PCI_CONFIG_ADDRESS, pci_address(f, reg));
	outl(PCI_CONFIG_DATA, v);
}

static void pci_write16(struct pci_fn f, u8 reg, u16 v)
{
	outl(PCI_CONFIG_ADDRESS, pci_address(f, reg));
	outw(PCI_CONFIG_DATA + (reg & 2), v);
}

/* Bus 0, every device and (for multi-function devices) every function. */
static int pci_find(u16 vendor, u16 device, struct pci_fn *out)
{
	for (u8 dev = 0; dev < 32; dev++) {
		for (u8 fn = 0; fn < 8; fn++) {
			struct pci_fn f = {0, dev, fn};
			u32 id = pci_read32(f, PCI_VENDOR_ID);
			if ((id & 0xffff) == 0xffff) {
				if (fn == 0)
					break; /* no device in this slot */
				continue;
			}
			if ((id & 0xffff) == vendor && id >> 16 == device) {
				*out = f;
				return 1;
			}
			if (fn == 0 && !(pci_read8(f, PCI_HEADER_TYPE) & 0x80))
				break; /* single-function device */
		}
	}
	return 0;
}

/* Size of a memory BAR by the all-ones probe (§6.2.5.1); decoding must be off. */
static u64 pci_bar_size(struct pci_fn f, int index, int is64)
{
	u8 reg = PCI_BAR0 + 4 * index;
	u32 lo = pci_read32(f, reg), hi = 0;
	pci_write32(f, reg, 0xffffffff);
	u64 mask = pci_read32(f, reg) & PCI_BAR_MEM_MASK & 0xffffffff;
	pci_write32(f, reg, lo);
	if (is64) {
		hi = pci_read32(f, reg + 4);
		pci_write32(f, reg + 4, 0xffffffff);
		mask |= (u64)pci_read32(f, reg + 4) << 32;
		pci_write32(f, reg + 4, hi);
	} else if (mask) {
		mask |= 0xffffffff00000000UL;
	}
	return mask ? ~mask + 1 : 0; /* no writable address bits: an unimplemented BAR */
}

/*
 * The address of memory BAR `index`, reading both halves of a 64-bit BAR. A BAR that is
 * unassigned (0) or outside the 4 GiB this guest maps is given an address here, naturally
 * aligned. Returns 0 for an I/O BAR, a BAR of size 0, or no room.
 */
static u64 pci_bar_address(struct pci_fn f, int index)
{
	u8 reg = PCI_BAR0 + 4 * index;
	u32 lo = pci_read32(f, reg);
	if (lo & PCI_BAR_IO)
		return 0;
	int is64 = (lo & PCI_BAR_TYPE_MASK) == PCI_BAR_TYPE_64 && index < 5;
	u64 addr = lo & PCI_BAR_MEM_MASK & 0xffffffff;
	if (is64)
		addr |= (u64)pci_read32(f, reg + 4) << 32;
	if (addr != 0 && addr < ADDRESS_LIMIT - 0x100000)
		return addr; /* assumed to fit below 4 GiB: virtio BARs are small */

	u16 cmd = pci_read16(f, PCI_COMMAND);
	pci_write16(f, PCI_COMMAND, cmd & ~PCI_COMMAND_MEMORY); /* no decoding while moving */
	u64 size = pci_bar_size(f, index, is64);
	if (size == 0)
		return 0;
	addr = (bar_alloc_next + size - 1) & ~(size - 1);
	if (addr + size > BAR_ALLOC_LIMIT)
		return 0;
	bar_alloc_next = addr + size;
	bars_assigned++;
	pci_write32(f, reg, (u32)addr | (lo & 0xf));
	if (is64)
		pci_write32(f, reg + 4, 0);
	pci_write16(f, PCI_COMMAND, cmd);
	return addr;
}

/*
 * Move every memory BAR of f to naturally aligned addresses from `base`, in BAR order
 * (§6.2.5.1), as firmware or an OS does when it lays out the window again. Decoding is
 * off while the BARs are sized and written, then restored. Returns how many moved.
 */
static int pci_place_bars(struct pci_fn f, u64 base)
{
	u16 cmd = pci_read16(f, PCI_COMMAND);
	pci_write16(f, PCI_COMMAND, cmd & ~PCI_COMMAND_MEMORY);
	int moved = 0;
	for (int i = 0; i < 6; i++) {
		u8 reg = PCI_BAR0 + 4 * i;
		u32 lo = pci_read32(f, reg);
		if (lo & PCI_BAR_IO)
			continue;
		int is64 = (lo & PCI_BAR_TYPE_MASK) == PCI_BAR_TYPE_64 && i < 5;
		u64 size = pci_bar_size(f, i, is64);
		if (size) {
			base = (base + size - 1) & ~(size - 1);
			pci_write32(f, reg, (u32)base | (lo & 0xf));
			if (is64)
				pci_write32(f, reg + 4, (u32)(base >> 32));
			base += size;
			moved++;
		}
		if (is64)
			i++; /* the upper half is not a BAR of its own */
	}
	pci_write16(f, PCI_COMMAND, cmd);
	return moved;
}

/* Memory decoding for the BARs, bus mastering for the device's DMA and MSI-X writes. */
static void pci_enable(struct pci_fn f)
{
	u16 cmd = pci_read16(f, PCI_COMMAND);
	pci_write16(f, PCI_COMMAND, cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
}

/* First capability at or after list position `pos` (0 = list head) with this id; 0 if
 * none. Bounded, in case the list loops. */
static u8 pci_next_cap(struct pci_fn f, u8 pos, u8 id)
{
	if (!(pci_read16(f, PCI_STATUS) & PCI_STATUS_CAP_LIST))
		return 0;
	u8 p = pos ? pci_read8(f, pos + 1) : pci_read8(f, PCI_CAP_PTR);
	for (int hops = 0; p >= 0x40 && hops < 48; hops++) {
		p &= 0xfc;
		if (pci_read8(f, p) == id)
			return p;
		p = pci_read8(f, p + 1);
	}
	return 0;
}

#endif

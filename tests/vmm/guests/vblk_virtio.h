/*
 * The virtio side of the virtio-blk tiny guest: the modern PCI transport (virtio 1.2
 * §4.1.4: vendor capabilities, common configuration, notifications), device
 * initialisation (§3.1.1), and one split virtqueue (§2.7) driven by the driver.
 *
 * Included once by virtio_blk.c.
 */
#ifndef VBLK_VIRTIO_H
#define VBLK_VIRTIO_H

#include "lib.h"
#include "vblk_irq.h"
#include "vblk_pci.h"

/* §4.1.4 virtio_pci_cap */
#define PCI_CAP_ID_VNDR 0x09
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_CAP_LEN 2
#define VIRTIO_CAP_CFG_TYPE 3
#define VIRTIO_CAP_BAR 4
#define VIRTIO_CAP_OFFSET 8
#define VIRTIO_CAP_NOTIFY_MULTIPLIER 16

/* §4.1.4.3 virtio_pci_common_cfg */
#define COMMON_DFSELECT 0x00
#define COMMON_DF 0x04
#define COMMON_GFSELECT 0x08
#define COMMON_GF 0x0c
#define COMMON_MSIX 0x10
#define COMMON_NUMQ 0x12
#define COMMON_STATUS 0x14
#define COMMON_CFGGENERATION 0x15
#define COMMON_Q_SELECT 0x16
#define COMMON_Q_SIZE 0x18
#define COMMON_Q_MSIX 0x1a
#define COMMON_Q_ENABLE 0x1c
#define COMMON_Q_NOFF 0x1e
#define COMMON_Q_DESCLO 0x20
#define COMMON_Q_DESCHI 0x24
#define COMMON_Q_AVAILLO 0x28
#define COMMON_Q_AVAILHI 0x2c
#define COMMON_Q_USEDLO 0x30
#define COMMON_Q_USEDHI 0x34
#define VIRTIO_MSI_NO_VECTOR 0xffff

/* §2.1 device status */
#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define STATUS_NEEDS_RESET 0x40
#define STATUS_FAILED 0x80

/* §2.7.5 descriptors, §2.7.6 available ring, §2.7.8 used ring */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_USED_F_NO_NOTIFY 1

/* At most this many descriptors per ring; a power of two (§2.7: split queue sizes). */
#define QUEUE_MAX 128

struct virtq_desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};

struct virtq_avail {
	u16 flags;
	u16 idx;
	u16 ring[QUEUE_MAX];
	u16 used_event;
};

struct virtq_used_elem {
	u32 id;
	u32 len;
};

struct virtq_used {
	u16 flags;
	u16 idx;
	struct virtq_used_elem ring[QUEUE_MAX];
	u16 avail_event;
};

/* §2.7: descriptor table 16-aligned, available ring 2-aligned, used ring 4-aligned. */
static struct virtq_desc vq_desc[QUEUE_MAX] __attribute__((aligned(4096)));
static struct virtq_avail vq_avail __attribute__((aligned(4096)));
static struct virtq_used vq_used __attribute__((aligned(4096)));

struct virtio_pci {
	struct pci_fn fn;
	u64 common, isr, device, notify; /* mapped addresses of the four regions */
	u16 queue_size, last_used, next_avail;
};

/* Compiler barrier. x86 keeps stores in order and loads in order (SDM §8.2.2), so the
 * write and read barriers virtio asks for (§2.7.13) need only stop the compiler. */
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
/* Store-to-load ordering, which x86 does not give: §2.7.7.2's "full memory barrier". */
static inline void mb(void) { __asm__ volatile("mfence" ::: "memory"); }

static u8 common_read8(struct virtio_pci *v, u32 r) { return mmio_read8(v->common + r); }
static u16 common_read16(struct virtio_pci *v, u32 r) { return mmio_read16(v->common + r); }
static u32 common_read32(struct virtio_pci *v, u32 r) { return mmio_read32(v->common + r); }
static void common_write8(struct virtio_pci *v, u32 r, u8 x) { mmio_write8(v->common + r, x); }
static void common_write16(struct virtio_pci *v, u32 r, u16 x) { mmio_write16(v->common + r, x); }
static void common_write32(struct virtio_pci *v, u32 r, u32 x) { mmio_write32(v->common + r, x); }

/* A 64-bit register as two 32-bit writes, low half first, as §4.1.3.1 allows. */
static void common_write64(struct virtio_pci *v, u32 r, u64 x)
{
	common_write32(v, r, (u32)x);
	common_write32(v, r + 4, (u32)(x >> 32));
}

/*
 * Find the common, notify, ISR and device configuration capabilities (§4.1.4) and map
 * their BARs. The first capability of each type is the one to use (§4.1.4.1). Returns
 * 0, or -1 naming nothing: the caller says which step failed.
 */
static int virtio_pci_find_caps(struct virtio_pci *v, u32 *notify_multiplier)
{
	u64 *slot[5] = {0, &v->common, &v->notify, &v->isr, &v->device};
	v->common = v->notify = v->isr = v->device = 0;
	for (u8 cap = pci_next_cap(v->fn, 0, PCI_CAP_ID_VNDR); cap;
	     cap = pci_next_cap(v->fn, cap, PCI_CAP_ID_VNDR)) {
		u8 type = pci_read8(v->fn, cap + VIRTIO_CAP_CFG_TYPE);
		u8 bar = pci_read8(v->fn, cap + VIRTIO_CAP_BAR);
		u8 len = pci_read8(v->fn, cap + VIRTIO_CAP_LEN);
		if (type < 1 || type > 4 || *slot[type] || bar > 5)
			continue; /* PCI_CFG access window, unknown types, later duplicates */
		if (len < (type == VIRTIO_PCI_CAP_NOTIFY_CFG ? 20 : 16))
			continue; /* too short to hold its fields (§4.1.4) */
		u64 base = pci_bar_address(v->fn, bar);
		if (!base)
			continue;
		*slot[type] = base + pci_read32(v->fn, cap + VIRTIO_CAP_OFFSET);
		if (type == VIRTIO_PCI_CAP_NOTIFY_CFG)
			*notify_multiplier = pci_read32(v->fn, cap + VIRTIO_CAP_NOTIFY_MULTIPLIER);
	}
	return v->common && v->notify && v->isr && v->device ? 0 : -1;
}

static void virtio_set_status(struct virtio_pci *v, u8 bits)
{
	common_write8(v, COMMON_STATUS, common_read8(v, COMMON_STATUS) | bits);
}

/* §4.1.4.3.2: after writing 0 the driver waits for device_status to read back 0. */
static int virtio_reset(struct virtio_pci *v)
{
	common_write8(v, COMMON_STATUS, 0);
	for (int i = 0; i < 1000000; i++)
		if (common_read8(v, COMMON_STATUS) == 0)
			return 0;
	return -1;
}

static u64 virtio_device_features(struct virtio_pci *v)
{
	common_write32(v, COMMON_DFSELECT, 0);
	u64 lo = common_read32(v, COMMON_DF);
	common_write32(v, COMMON_DFSELECT, 1);
	return lo | (u64)common_read32(v, COMMON_DF) << 32;
}

/* §3.1.1 steps 5-6: write the subset, set FEATURES_OK, check the device kept it. */
static int virtio_set_features(struct virtio_pci *v, u64 features)
{
	common_write32(v, COMMON_GFSELECT, 0);
	common_write32(v, COMMON_GF, (u32)features);
	common_write32(v, COMMON_GFSELECT, 1);
	common_write32(v, COMMON_GF, (u32)(features >> 32));
	virtio_set_status(v, STATUS_FEATURES_OK);
	return common_read8(v, COMMON_STATUS) & STATUS_FEATURES_OK ? 0 : -1;
}

/* A device-configuration read that no config change tears (§4.1.4.3.1, §2.5.1). */
static u64 virtio_config_read64(struct virtio_pci *v, u32 off)
{
	u8 gen;
	u64 x;
	do {
		gen = common_read8(v, COMMON_CFGGENERATION);
		x = mmio_read32(v->device + off) | (u64)mmio_read32(v->device + off + 4) << 32;
	} while (gen != common_read8(v, COMMON_CFGGENERATION));
	return x;
}

/* Largest power of two <= n (n >= 1). */
static u16 pow2_floor(u16 n)
{
	u16 p = 1;
	while (p <= n / 2)
		p *= 2;
	return p;
}

/*
 * Queue 0 (§4.1.5.1.3): size (the device's, capped at QUEUE_MAX), ring addresses,
 * MSI-X vector (read back: NO_VECTOR means the device refused it, §4.1.5.1.2), enable.
 * Returns 0, -1 for no usable queue, -2 for a refused vector.
 */
static int virtio_setup_queue0(struct virtio_pci *v, u16 msix_vector, u32 notify_multiplier)
{
	common_write16(v, COMMON_Q_SELECT, 0);
	u16 max = common_read16(v, COMMON_Q_SIZE);
	if (max == 0 || common_read16(v, COMMON_Q_ENABLE))
		return -1;
	v->queue_size = pow2_floor(max < QUEUE_MAX ? max : QUEUE_MAX);
	v->last_used = v->next_avail = 0;
	memset(vq_desc, 0, sizeof(vq_desc));
	memset(&vq_avail, 0, sizeof(vq_avail));
	memset(&vq_used, 0, sizeof(vq_used));
	common_write16(v, COMMON_Q_SIZE, v->queue_size);
	common_write64(v, COMMON_Q_DESCLO, (u64)vq_desc);
	common_write64(v, COMMON_Q_AVAILLO, (u64)&vq_avail);
	common_write64(v, COMMON_Q_USEDLO, (u64)&vq_used);
	common_write16(v, COMMON_Q_MSIX, msix_vector);
	if (common_read16(v, COMMON_Q_MSIX) != msix_vector)
		return -2;
	v->notify += (u64)common_read16(v, COMMON_Q_NOFF) * notify_multiplier;
	common_write16(v, COMMON_Q_ENABLE, 1);
	return 0;
}

/* §2.7.13: put a chain's head in the available ring, then publish the new index. */
static void vq_publish(struct virtio_pci *v, u16 head)
{
	vq_avail.ring[v->next_avail % v->queue_size] = head;
	barrier(); /* ring entry before idx (§2.7.13.2) */
	vq_avail.idx = ++v->next_avail;
}

/* §2.7.13.4 / §4.1.5.2: notify unless the device asked not to be (flags read after the
 * idx store, hence the full barrier, §2.7.7.2). */
static void vq_kick(struct virtio_pci *v)
{
	mb();
	if (!(*(volatile u16 *)&vq_used.flags & VIRTQ_USED_F_NO_NOTIFY))
		mmio_write16(v->notify, 0);
}

/* Whether the device has returned chains we have not yet consumed. */
static int vq_has_used(struct virtio_pci *v)
{
	return *(volatile u16 *)&vq_used.idx != v->last_used;
}

/* The next used element; call only when vq_has_used(). */
static struct virtq_used_elem vq_pop_used(struct virtio_pci *v)
{
	barrier(); /* idx before the entry it covers (§2.7.13 read barrier) */
	struct virtq_used_elem e = vq_used.ring[v->last_used % v->queue_size];
	v->last_used++;
	return e;
}

#endif

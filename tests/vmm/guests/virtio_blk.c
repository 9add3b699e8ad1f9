/*
 * A freestanding virtio-blk driver: the tiny guest behind kvmlite's virtio-blk tests and
 * benchmark, run the same way under QEMU as a cross-check of the guest itself.
 *
 * It finds the modern virtio-blk function (1af4:1042) on PCI bus 0, maps its virtio
 * capabilities (virtio 1.2 §4.1.4), routes MSI-X vectors 0 (config) and 1 (queue 0) to the
 * LAPIC, initialises the device (§3.1.1), reads the capacity (§5.2.4) and then does what
 * the PVH command line says (space-separated key=value; numbers decimal, 0x-hex, or with a
 * K/M suffix; unknown words are ignored, so a VMM may add its own):
 *
 *   mode=verify seed=S wstart=A wcount=B rstart=C rcount=D
 *       GET_ID (prints "serial=..."); writes sectors A..A+B-1, each 512-byte sector the
 *       64 words pattern(S, sector, i) (see pattern() below), as 4 KiB requests whose data
 *       is split over two descriptors, several in flight; reads them back and compares;
 *       reads sectors C..C+D-1 and prints the checksum() of their bytes; reads the sector
 *       past the end (expects IOERR, "read past end status=1"); FLUSH. On a
 *       read-only device (VIRTIO_BLK_F_RO) it writes one sector and expects IOERR instead
 *       ("ro write status=1").
 *   mode=bench op=read|write size=BYTES count=N qd=N seq|rand seed=S
 *       N requests of BYTES (a multiple of 512), up to qd in flight, sequential from
 *       sector 0 (wrapping at the end of the disk) or at random size-aligned offsets.
 *
 * Either mode also takes bar=ADDR: before anything else, move the function's memory BARs to
 * ADDR and up (as an OS re-laying out the window would), to exercise the VMM's BAR moves.
 *
 * Lines on COM1 start with "vblk: "; a failure prints "vblk: FAIL <reason>" and exits
 * through the debug-exit port with one of the EXIT_* codes below (0 = success).
 *
 * The kit builds one source file per guest, so the PCI, interrupt and virtio parts live in
 * vblk_pci.h, vblk_irq.h and vblk_virtio.h as static functions included here.
 */
#include "lib.h"
#include "vblk_irq.h"
#include "vblk_pci.h"
#include "vblk_virtio.h"

#define EXIT_CMDLINE 10
#define EXIT_NO_DEVICE 11
#define EXIT_NO_CAPS 12
#define EXIT_MSIX 13
#define EXIT_RESET 14
#define EXIT_FEATURES 15
#define EXIT_QUEUE 16
#define EXIT_MSIX_VECTOR 17
#define EXIT_TIMEOUT 18
#define EXIT_BAD_USED 19
#define EXIT_STATUS 20
#define EXIT_MISMATCH 21
#define EXIT_RO_WRITE_OK 22
#define EXIT_MEMORY 23
#define EXIT_NO_IRQ 24
#define EXIT_NEEDS_RESET 25

#define VIRTIO_ID_VENDOR 0x1af4
#define VIRTIO_ID_BLOCK_MODERN 0x1042 /* 0x1040 + device id 2 (§4.1.2.1) */

/* Feature bits (§5.2.3, §6) this driver implements; it accepts no others. */
#define VIRTIO_BLK_F_RO (1UL << 5)
#define VIRTIO_BLK_F_BLK_SIZE (1UL << 6)
#define VIRTIO_BLK_F_FLUSH (1UL << 9)
#define VIRTIO_F_VERSION_1 (1UL << 32)
#define DRIVER_FEATURES (VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_RO | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH)

/* §5.2.6 requests */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_ID_BYTES 20
#define SECTOR 512

/* §5.2.4 virtio_blk_config */
#define BLK_CFG_CAPACITY 0

/* Data buffers live in guest RAM from 16 MiB (above this image and its stack); the
 * memory map from start_info must cover DATA_BASE + what a run needs. */
#define DATA_BASE 0x1000000UL
#define DATA_MAX (32UL << 20)
#define E820_RAM 1

/* Each request owns DESC_PER_SLOT descriptors: header, up to two data buffers, status. */
#define DESC_PER_SLOT 4
#define MAX_SLOTS (QUEUE_MAX / DESC_PER_SLOT)
/* Watchdog ticks (100 ms each) a request may take before we call its interrupt lost. */
#define REQUEST_TIMEOUT_TICKS 100

struct virtio_blk_req {
	u32 type;
	u32 reserved;
	u64 sector;
};

struct hvm_memmap_table_entry {
	u64 addr, size;
	u32 type, reserved;
};

/* One block request as the generators describe it. */
struct io {
	u32 type;
	u64 sector;
	u64 buf;
	u32 len;   /* 0 for FLUSH */
	u32 split; /* if non-zero, the data goes in two descriptors, the first this long */
};

typedef void (*io_gen)(u32 i, u32 slot, struct io *io, const void *arg);

struct options {
	int bench;
	u64 seed;
	u64 wstart, wcount, rstart, rcount;
	int write, random;
	u64 size, count, qd;
	u64 bar; /* 0: keep the BARs where they are */
};

static struct virtio_pci vdev;
static u64 capacity, negotiated;
static u32 nslots;
static struct virtio_blk_req req_hdr[MAX_SLOTS];
static volatile u8 req_status[MAX_SLOTS];
static u32 req_writable[MAX_SLOTS]; /* device-writable bytes in each slot's chain */

/* ---- output ------------------------------------------------------------------------ */

static void put_dec(u64 v)
{
	char buf[24];
	int n = 0;
	do {
		buf[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		putc(buf[--n]);
}

static int fail(int code, const char *why)
{
	puts("vblk: FAIL ");
	puts(why);
	putc('\n');
	return code;
}

/* ---- command line ------------------------------------------------------------------ */

static int streq(const char *a, const char *b, int n)
{
	for (int i = 0; i < n; i++)
		if (a[i] != b[i])
			return 0;
	return b[n] == '\0';
}

/* Decimal, 0x-hex, optional K or M suffix; -1 (all ones) when malformed. */
static u64 parse_number(const char *s, int n)
{
	u64 v = 0, base = 10, mult = 1;
	int i = 0;
	if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		i = 2;
	} else if (n > 1 && (s[n - 1] == 'K' || s[n - 1] == 'k')) {
		mult = 1024;
		n--;
	} else if (n > 1 && (s[n - 1] == 'M' || s[n - 1] == 'm')) {
		mult = 1024 * 1024;
		n--;
	}
	if (i >= n)
		return ~0UL;
	for (; i < n; i++) {
		char c = s[i];
		u64 d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return ~0UL;
		v = v * base + d;
	}
	return v * mult;
}

/* One word "key" or "key=value" of length n; returns 0, or -1 for a bad value. */
static int parse_word(struct options *o, const char *w, int n)
{
	int k = 0;
	while (k < n && w[k] != '=')
		k++;
	if (k == n) {
		if (streq(w, "seq", n))
			o->random = 0;
		else if (streq(w, "rand", n))
			o->random = 1;
		return 0;
	}
	const char *val = w + k + 1;
	int vn = n - k - 1;
	if (streq(w, "mode", k)) {
		if (streq(val, "bench", vn))
			o->bench = 1;
		else if (streq(val, "verify", vn))
			o->bench = 0;
		else
			return -1;
		return 0;
	}
	if (streq(w, "op", k)) {
		if (streq(val, "write", vn))
			o->write = 1;
		else if (streq(val, "read", vn))
			o->write = 0;
		else
			return -1;
		return 0;
	}
	static const char *const keys[] = {"seed", "wstart", "wcount", "rstart", "rcount",
					   "size", "count", "qd",     "bar"};
	u64 *const dest[] = {&o->seed, &o->wstart, &o->wcount, &o->rstart, &o->rcount,
			     &o->size, &o->count,  &o->qd,     &o->bar};
	for (unsigned i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (streq(w, keys[i], k)) {
			*dest[i] = parse_number(val, vn);
			return *dest[i] == ~0UL ? -1 : 0;
		}
	}
	return 0; /* someone else's option (console=..., etc.) */
}

static int parse_cmdline(struct options *o, const char *s)
{
	*o = (struct options){.seed = 1, .size = 4096, .count = 0, .qd = 1};
	while (s && *s) {
		while (*s == ' ')
			s++;
		int n = 0;
		while (s[n] && s[n] != ' ')
			n++;
		if (n && parse_word(o, s, n) < 0)
			return -1;
		s += n;
	}
	return 0;
}

/* ---- memory ------------------------------------------------------------------------ */

/* Whether [DATA_BASE, DATA_BASE + bytes) is RAM by the PVH memory map (§ start_info.h). */
static int ram_covers(struct hvm_start_info *si, u64 bytes)
{
	if (si->version < 1 || si->memmap_entries == 0)
		return 1; /* no map given: trust the caller's -m */
	const struct hvm_memmap_table_entry *e = (void *)si->memmap_paddr;
	for (u32 i = 0; i < si->memmap_entries; i++)
		if (e[i].type == E820_RAM && e[i].addr <= DATA_BASE &&
		    e[i].addr + e[i].size >= DATA_BASE + bytes)
			return 1;
	return 0;
}

/* The verify pattern: a splitmix64-style mix of seed, sector and word index. The test
 * computes the same function in Python to judge the host file. */
static u64 pattern(u64 seed, u64 sector, u64 i)
{
	u64 x = seed * 0x9e3779b97f4a7c15UL + sector * 0xbf58476d1ce4e5b9UL + i;
	x ^= x >> 31;
	x *= 0x94d049bb133111ebUL;
	x ^= x >> 29;
	return x;
}

static void fill_pattern(u64 *buf, u64 seed, u64 sector, u64 count)
{
	for (u64 s = 0; s < count; s++)
		for (u64 i = 0; i < SECTOR / 8; i++)
			*buf++ = pattern(seed, sector + s, i);
}

/* FNV-1a over 64-bit little-endian words. */
static u64 checksum(const u64 *buf, u64 words)
{
	u64 h = 0xcbf29ce484222325UL;
	for (u64 i = 0; i < words; i++)
		h = (h ^ buf[i]) * 0x100000001b3UL;
	return h;
}

/* ---- requests ---------------------------------------------------------------------- */

static void set_desc(u16 d, u64 addr, u32 len, u16 flags)
{
	vq_desc[d] = (struct virtq_desc){addr, len, flags, (u16)(d + 1)};
}

/* Write a request's chain into its slot's descriptors (§5.2.6: header readable, data
 * readable for OUT, writable for IN and GET_ID, status byte writable) and publish it. */
static void submit(u32 slot, const struct io *io)
{
	u16 d = (u16)(slot * DESC_PER_SLOT), head = d;
	req_hdr[slot] = (struct virtio_blk_req){io->type, 0, io->sector};
	req_status[slot] = 0xff;
	u16 data_flags = VIRTQ_DESC_F_NEXT;
	if (io->type == VIRTIO_BLK_T_IN || io->type == VIRTIO_BLK_T_GET_ID)
		data_flags |= VIRTQ_DESC_F_WRITE;
	set_desc(d++, (u64)&req_hdr[slot], sizeof(req_hdr[slot]), VIRTQ_DESC_F_NEXT);
	if (io->len && io->split && io->split < io->len) {
		set_desc(d++, io->buf, io->split, data_flags);
		set_desc(d++, io->buf + io->split, io->len - io->split, data_flags);
	} else if (io->len) {
		set_desc(d++, io->buf, io->len, data_flags);
	}
	set_desc(d, (u64)&req_status[slot], 1, VIRTQ_DESC_F_WRITE);
	req_writable[slot] = 1 + (data_flags & VIRTQ_DESC_F_WRITE ? io->len : 0);
	vq_publish(&vdev, head);
}

/*
 * The next completed request's slot, waiting for its interrupt; -EXIT_* on failure.
 * The used length must be what the device wrote (§2.7.8.2): the data of an IN or GET_ID
 * plus the status byte; a successful virtio-blk request fills every writable byte.
 */
static int reap(void)
{
	u32 start = watchdog_ticks;
	while (!vq_has_used(&vdev)) {
		if (watchdog_ticks - start > REQUEST_TIMEOUT_TICKS) {
			if (common_read8(&vdev, COMMON_STATUS) & STATUS_NEEDS_RESET)
				return -fail(EXIT_NEEDS_RESET, "device set DEVICE_NEEDS_RESET");
			return -fail(EXIT_TIMEOUT, "no completion within 10 s (interrupt lost?)");
		}
		irq_wait();
	}
	struct virtq_used_elem e = vq_pop_used(&vdev);
	if (e.id % DESC_PER_SLOT || e.id / DESC_PER_SLOT >= nslots)
		return -fail(EXIT_BAD_USED, "used ring returned a descriptor that is no chain head");
	u32 slot = e.id / DESC_PER_SLOT;
	if (req_status[slot] == VIRTIO_BLK_S_OK && e.len != req_writable[slot]) {
		puts("vblk: used length ");
		put_dec(e.len);
		puts(", expected ");
		put_dec(req_writable[slot]);
		putc('\n');
		return -fail(EXIT_BAD_USED, "used length is not the bytes written");
	}
	return (int)slot;
}

/*
 * Run n requests from gen, up to depth in flight; each must complete with `expect`
 * status. Returns 0 or an EXIT_* code; *last gets the final status seen.
 */
static int run_ios(u32 n, u32 depth, io_gen gen, const void *arg, u8 expect, u8 *last)
{
	u32 free_slots[MAX_SLOTS], nfree = 0, issued = 0, done = 0;
	for (u32 s = 0; s < depth && s < nslots; s++)
		free_slots[nfree++] = s;
	while (done < n) {
		int queued = 0;
		while (nfree && issued < n) {
			struct io io;
			u32 slot = free_slots[--nfree];
			gen(issued++, slot, &io, arg);
			submit(slot, &io);
			queued = 1;
		}
		if (queued)
			vq_kick(&vdev);
		int slot = reap();
		if (slot < 0)
			return -slot;
		u8 status = req_status[slot];
		if (last)
			*last = status;
		if (status != expect) {
			puts("vblk: request status ");
			put_hex(status);
			putc('\n');
			return fail(EXIT_STATUS, "unexpected request status");
		}
		free_slots[nfree++] = (u32)slot;
		done++;
	}
	return 0;
}

/* ---- verify mode ------------------------------------------------------------------- */

#define CHUNK_SECTORS 8 /* 4 KiB per request */

struct range_arg {
	u32 type;
	u64 sector, count, buf;
	u32 split;
};

/* Request i of a range: CHUNK_SECTORS at a time, the last one shorter. */
static void range_gen(u32 i, u32 slot, struct io *io, const void *p)
{
	const struct range_arg *a = p;
	(void)slot;
	u64 first = (u64)i * CHUNK_SECTORS, n = a->count - first;
	if (n > CHUNK_SECTORS)
		n = CHUNK_SECTORS;
	*io = (struct io){a->type, a->sector + first, a->buf + first * SECTOR, (u32)(n * SECTOR),
			  a->split};
}

static int range_io(u32 type, u64 sector, u64 count, u64 buf, u32 split, u8 expect, u8 *last)
{
	struct range_arg a = {type, sector, count, buf, split};
	u32 n = (u32)((count + CHUNK_SECTORS - 1) / CHUNK_SECTORS);
	return run_ios(n, nslots, range_gen, &a, expect, last);
}

static int verify_get_id(void)
{
	static char id[VIRTIO_BLK_ID_BYTES + 1];
	struct io io = {VIRTIO_BLK_T_GET_ID, 0, (u64)id, VIRTIO_BLK_ID_BYTES, 0};
	submit(0, &io);
	vq_kick(&vdev);
	int slot = reap();
	if (slot < 0)
		return -slot;
	if (req_status[slot] != VIRTIO_BLK_S_OK)
		return fail(EXIT_STATUS, "GET_ID failed");
	puts("vblk: serial=");
	for (int i = 0; i < VIRTIO_BLK_ID_BYTES && id[i]; i++)
		putc(id[i] >= ' ' && id[i] < 127 ? id[i] : '?');
	putc('\n');
	return 0;
}

static int verify_writes(const struct options *o)
{
	u64 *wbuf = (u64 *)DATA_BASE, *rbuf = wbuf + o->wcount * SECTOR / 8;
	u8 status = 0;
	if (negotiated & VIRTIO_BLK_F_RO) {
		/* §5.2.6.1: the device answers a write to a read-only disk with IOERR. */
		fill_pattern(wbuf, o->seed, o->wstart, 1);
		int r = range_io(VIRTIO_BLK_T_OUT, o->wstart, 1, (u64)wbuf, 0, VIRTIO_BLK_S_IOERR,
				 &status);
		puts("vblk: ro write status=");
		put_dec(status);
		putc('\n');
		return r == EXIT_STATUS ? fail(EXIT_RO_WRITE_OK, "write to a read-only disk") : r;
	}
	fill_pattern(wbuf, o->seed, o->wstart, o->wcount);
	/* 1536 + 2560: a data split that is not on a sector or page boundary. */
	int r = range_io(VIRTIO_BLK_T_OUT, o->wstart, o->wcount, (u64)wbuf, 3 * SECTOR,
			 VIRTIO_BLK_S_OK, 0);
	if (r)
		return r;
	puts("vblk: wrote ");
	put_dec(o->wcount);
	puts(" sectors at ");
	put_dec(o->wstart);
	putc('\n');

	memset(rbuf, 0, o->wcount * SECTOR);
	r = range_io(VIRTIO_BLK_T_IN, o->wstart, o->wcount, (u64)rbuf, 0, VIRTIO_BLK_S_OK, 0);
	if (r)
		return r;
	for (u64 w = 0; w < o->wcount * SECTOR / 8; w++) {
		if (rbuf[w] != wbuf[w]) {
			puts("vblk: mismatch at sector ");
			put_dec(o->wstart + w / (SECTOR / 8));
			putc('\n');
			return fail(EXIT_MISMATCH, "read back differs from what was written");
		}
	}
	puts("vblk: readback ok\n");
	return 0;
}

static int verify_reads(const struct options *o)
{
	u64 *buf = (u64 *)DATA_BASE;
	int r = range_io(VIRTIO_BLK_T_IN, o->rstart, o->rcount, (u64)buf, 0, VIRTIO_BLK_S_OK, 0);
	if (r)
		return r;
	puts("vblk: read ");
	put_dec(o->rcount);
	puts(" sectors at ");
	put_dec(o->rstart);
	puts(" sum=");
	put_hex(checksum(buf, o->rcount * SECTOR / 8));
	putc('\n');
	return 0;
}

/* A read of the sector past the end: the device must answer IOERR (§5.2.6.1) and must
 * not write the buffer (checked: it still holds a marker). */
static int verify_past_end(void)
{
	u64 *buf = (u64 *)DATA_BASE;
	u8 status = 0;
	for (int i = 0; i < SECTOR / 8; i++)
		buf[i] = 0x5a5a5a5a5a5a5a5aUL;
	int r = range_io(VIRTIO_BLK_T_IN, capacity, 1, (u64)buf, 0, VIRTIO_BLK_S_IOERR, &status);
	puts("vblk: read past end status=");
	put_dec(status);
	putc('\n');
	if (r)
		return r;
	for (int i = 0; i < SECTOR / 8; i++)
		if (buf[i] != 0x5a5a5a5a5a5a5a5aUL)
			return fail(EXIT_MISMATCH, "a failed read wrote the buffer");
	return 0;
}

static int verify_flush(void)
{
	if (!(negotiated & VIRTIO_BLK_F_FLUSH)) {
		puts("vblk: flush not offered\n");
		return 0;
	}
	struct io io = {VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0};
	submit(0, &io);
	vq_kick(&vdev);
	int slot = reap();
	if (slot < 0)
		return -slot;
	if (req_status[slot] != VIRTIO_BLK_S_OK)
		return fail(EXIT_STATUS, "FLUSH failed");
	puts("vblk: flush ok\n");
	return 0;
}

static int verify(const struct options *o)
{
	if (o->wstart + o->wcount > capacity || o->rstart + o->rcount > capacity)
		return fail(EXIT_CMDLINE, "sector range beyond the disk's capacity");
	int r = verify_get_id();
	if (!r && o->wcount)
		r = verify_writes(o);
	if (!r && o->rcount)
		r = verify_reads(o);
	if (!r)
		r = verify_past_end();
	if (!r)
		r = verify_flush();
	if (r)
		return r;
	/* Completions the guest found before it ever halted leave their interrupt pending
	 * (or still on its way from the VMM's I/O thread): give it up to two watchdog ticks. */
	for (u32 start = watchdog_ticks; !queue_irqs && watchdog_ticks - start < 2;)
		irq_wait();
	puts("vblk: irqs queue=");
	put_dec(queue_irqs);
	puts(" config=");
	put_dec(config_irqs);
	puts(" watchdog=");
	put_dec(watchdog_ticks);
	putc('\n');
	if (!queue_irqs)
		return fail(EXIT_NO_IRQ, "completions came without a queue interrupt");
	puts("vblk: ok\n");
	return 0;
}

/* ---- bench mode -------------------------------------------------------------------- */

struct bench_arg {
	u32 type;
	u64 size, blocks; /* request size in bytes; the disk in request-size blocks */
	int random;
	u64 rng;
};

/* xorshift64* (Vigna): good enough to scatter offsets, integer-only. */
static u64 prng(u64 *s)
{
	u64 x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dUL;
}

static void bench_gen(u32 i, u32 slot, struct io *io, const void *p)
{
	struct bench_arg *a = (struct bench_arg *)p;
	u64 block = a->random ? prng(&a->rng) % a->blocks : i % a->blocks;
	*io = (struct io){a->type, block * (a->size / SECTOR), DATA_BASE + slot * a->size,
			  (u32)a->size, 0};
}

static int bench(const struct options *o)
{
	struct bench_arg a = {o->write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, o->size,
			      capacity / (o->size / SECTOR), o->random, o->seed | 1};
	if (a.blocks == 0)
		return fail(EXIT_CMDLINE, "request size larger than the disk");
	int r = run_ios((u32)o->count, (u32)o->qd, bench_gen, &a, VIRTIO_BLK_S_OK, 0);
	if (r)
		return r;
	puts("vblk: bench done\n");
	return 0;
}

/* ---- bring-up ---------------------------------------------------------------------- */

static int check_options(struct hvm_start_info *si, const struct options *o)
{
	u64 need;
	if (o->bench) {
		if (!o->size || o->size % SECTOR || o->size > (1UL << 22))
			return fail(EXIT_CMDLINE, "size must be a multiple of 512 up to 4M");
		if (!o->qd || o->qd > MAX_SLOTS)
			return fail(EXIT_CMDLINE, "qd must be 1..32");
		need = o->size * o->qd;
	} else {
		need = (2 * o->wcount + o->rcount) * SECTOR;
		if (need < SECTOR)
			need = SECTOR; /* the read past the end */
	}
	if (o->bar && (o->bar < BAR_ALLOC_BASE || o->bar >= BAR_ALLOC_LIMIT))
		return fail(EXIT_CMDLINE, "bar= must lie in 0xc0000000..0xfebfffff");
	if (need > DATA_MAX)
		return fail(EXIT_CMDLINE, "buffers needed exceed 32 MiB");
	if (!ram_covers(si, need))
		return fail(EXIT_MEMORY, "guest RAM must cover 16 MiB + the buffers (use -m 64)");
	return 0;
}

/* §3.1.1, steps 1-8, with MSI-X vectors set before DRIVER_OK (§4.1.5.1.2). */
static int device_init(void)
{
	u32 notify_multiplier = 0;
	if (virtio_pci_find_caps(&vdev, &notify_multiplier))
		return fail(EXIT_NO_CAPS, "virtio common/notify/ISR/device capability missing");
	pci_enable(vdev.fn);
	puts("vblk: common cfg at ");
	put_hex(vdev.common);
	puts(", BARs placed by this guest: ");
	put_dec(bars_assigned);
	putc('\n');
	if (msix_init(vdev.fn))
		return fail(EXIT_MSIX, "no usable MSI-X capability");
	if (virtio_reset(&vdev))
		return fail(EXIT_RESET, "device did not reset");
	virtio_set_status(&vdev, STATUS_ACKNOWLEDGE);
	virtio_set_status(&vdev, STATUS_DRIVER);
	u64 offered = virtio_device_features(&vdev);
	puts("vblk: device features ");
	put_hex(offered);
	putc('\n');
	if (!(offered & VIRTIO_F_VERSION_1))
		return fail(EXIT_FEATURES, "device does not offer VIRTIO_F_VERSION_1");
	negotiated = offered & DRIVER_FEATURES;
	if (virtio_set_features(&vdev, negotiated))
		return fail(EXIT_FEATURES, "device refused FEATURES_OK");
	common_write16(&vdev, COMMON_MSIX, 0);
	if (common_read16(&vdev, COMMON_MSIX) != 0)
		return fail(EXIT_MSIX_VECTOR, "device refused MSI-X vector 0 for config");
	int r = virtio_setup_queue0(&vdev, 1, notify_multiplier);
	if (r == -1)
		return fail(EXIT_QUEUE, "queue 0 is missing or already enabled");
	if (r == -2)
		return fail(EXIT_MSIX_VECTOR, "device refused MSI-X vector 1 for queue 0");
	nslots = vdev.queue_size / DESC_PER_SLOT;
	virtio_set_status(&vdev, STATUS_DRIVER_OK);
	capacity = virtio_config_read64(&vdev, BLK_CFG_CAPACITY);
	puts("vblk: features ");
	put_hex(negotiated);
	puts(" queue ");
	put_dec(vdev.queue_size);
	puts(" capacity ");
	put_dec(capacity);
	putc('\n');
	return 0;
}

int main(struct hvm_start_info *si)
{
	struct options o;
	if (!si || si->magic != HVM_START_MAGIC_VALUE)
		return fail(EXIT_CMDLINE, "no PVH start_info");
	if (parse_cmdline(&o, (const char *)si->cmdline_paddr) < 0)
		return fail(EXIT_CMDLINE, "bad command line value");
	int r = check_options(si, &o);
	if (r)
		return r;
	if (!pci_find(VIRTIO_ID_VENDOR, VIRTIO_ID_BLOCK_MODERN, &vdev.fn))
		return fail(EXIT_NO_DEVICE, "no modern virtio-blk (1af4:1042) on PCI bus 0");
	puts("vblk: pci 00:");
	put_dec(vdev.fn.dev);
	putc('.');
	put_dec(vdev.fn.fn);
	putc('\n');
	if (o.bar) {
		int moved = pci_place_bars(vdev.fn, o.bar);
		puts("vblk: moved ");
		put_dec(moved);
		puts(" BARs\n");
	}
	irq_init();
	r = device_init();
	if (r)
		return r;
	r = o.bench ? bench(&o) : verify(&o);
	if (r)
		virtio_set_status(&vdev, STATUS_FAILED);
	return r;
}

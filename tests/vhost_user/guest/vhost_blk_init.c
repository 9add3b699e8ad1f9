/*
 * /init for the vhost-user-blk QEMU test (tests/vhost_user/test_qemu.py).
 *
 * The guest's own virtio-blk driver talks to kvmlite's VirtioBlock through
 * QEMU's vhost-user-blk-pci.  This program reads the first 64 KiB of
 * /dev/vda (the host filled it) and prints their FNV-1a checksum, writes a
 * 64 KiB pattern at 1 MiB, fsyncs, drops the page cache (BLKFLSBUF) and
 * reads it back through the device, then powers off.  The host checks the
 * checksum against its file and finds the pattern in the image.
 * Output lines start with "VHOST: "; the last one is "VHOST-DONE".
 *
 * The kernel hands unknown "key=value" command-line words to init as
 * environment variables: vhost_mode=loop writes the pattern at 2 MiB in a
 * loop (the host kills the front-end meanwhile); vhost_mode=rng reads
 * /dev/hwrng (vhost-user-rng-pci) instead of using a disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (64 * 1024)
#define WRITE_AT (1024 * 1024)

static unsigned char buf[CHUNK], pat[CHUNK];

/* One console line: "VHOST: <key>=<value>". */
static void say(const char *key, const char *value)
{
	char line[200];
	int n = snprintf(line, sizeof(line), "VHOST: %s=%s\n", key, value);
	if (write(1, line, n) < 0)
		return;
}

static uint64_t fnv(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

static int full(int fd, unsigned char *p, size_t n, off_t off, int wr)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = wr ? pwrite(fd, p + done, n - done, off + done)
			       : pread(fd, p + done, n - done, off + done);
		if (r <= 0)
			return -1;
		done += r;
	}
	return 0;
}

static void finish(void)
{
	if (write(1, "VHOST-DONE\n", 11) < 0)
		sync(); /* no console: power off all the same */
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

static void rng(void)
{
	char hex[2 * 32 + 1];
	int fd = -1, i;

	for (i = 0; i < 200 && (fd = open("/dev/hwrng", O_RDONLY)) < 0; i++)
		usleep(50000);
	if (fd < 0 || read(fd, buf, 32) != 32) {
		say("error", "hwrng failed"), say("errno", strerror(errno));
		finish();
	}
	for (i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", buf[i]);
	say("hwrng", hex);
	finish();
}

static void loop(int fd)
{
	for (unsigned long n = 0;; n++) {
		if (full(fd, pat, CHUNK, 2 * WRITE_AT, 1) < 0 || fsync(fd) < 0) {
			say("error", "loop write failed"), say("errno", strerror(errno));
			finish();
		}
		if (n == 0)
			say("loop", "running");
	}
}

int main(void)
{
	const char *mode = getenv("vhost_mode");
	struct stat st;
	char hex[17];
	int fd, i;

	mkdir("/dev", 0755);
	if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL) < 0 && errno != EBUSY)
		say("error", "mount failed"), say("errno", strerror(errno));
	if (mode && !strcmp(mode, "rng"))
		rng();
	for (i = 0; i < CHUNK; i++)
		pat[i] = (unsigned char)(i * 7 + 3 + (i >> 9));
	for (i = 0; i < 200 && stat("/dev/vda", &st) < 0; i++)
		usleep(50000);
	fd = open("/dev/vda", O_RDWR);
	if (fd < 0) {
		say("error", "open failed"), say("errno", strerror(errno));
		finish();
	}
	if (full(fd, buf, CHUNK, 0, 0) < 0) {
		say("error", "read failed"), say("errno", strerror(errno));
		finish();
	}
	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)fnv(buf, CHUNK));
	say("read", hex);
	if (mode && !strcmp(mode, "loop"))
		loop(fd);
	if (full(fd, pat, CHUNK, WRITE_AT, 1) < 0 || fsync(fd) < 0) {
		say("error", "write failed"), say("errno", strerror(errno));
		finish();
	}
	if (ioctl(fd, BLKFLSBUF, 0) < 0)
		say("error", "flsbuf failed"), say("errno", strerror(errno));
	memset(buf, 0, CHUNK);
	if (full(fd, buf, CHUNK, WRITE_AT, 0) < 0) {
		say("error", "reread failed"), say("errno", strerror(errno));
		finish();
	}
	say("verify", memcmp(buf, pat, CHUNK) ? "bad" : "ok");
	close(fd);
	finish();
	return 0;
}

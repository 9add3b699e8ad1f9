/*
 * check_init: a one-process /init for kvmlite's Linux boot tests.
 *
 * On an emulated KVM every fork+exec costs seconds, so this program does all
 * the checks itself and prints a machine-readable report on /dev/console,
 * one "KVMLITE-CHECK key=value" line per fact:
 *
 *   KVMLITE-CHECK cpus_online=<list from /sys/devices/system/cpu/online>
 *   KVMLITE-CHECK memtotal_kb=<MemTotal from /proc/meminfo>
 *   KVMLITE-CHECK e820=<start>-<end>:<type>     one per /sys/firmware/memmap entry
 *   KVMLITE-CHECK e820=absent                   if the kernel has no memmap
 *   KVMLITE-CHECK cmdline=<the kernel command line>
 *   KVMLITE-CHECK-DONE
 *
 * then powers the machine off with reboot(RB_POWER_OFF). If that returns,
 * it exits: init exiting panics the kernel, which with panic=-1 resets the
 * machine, so a VMM sees the guest end either way.
 *
 * Build: gcc -static -O2 -o check_init check_init.c
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

static int out = 1;

static void emit(const char *key, const char *value)
{
	char line[4352];
	int n = snprintf(line, sizeof(line), "KVMLITE-CHECK %s=%s\n", key, value);

	if (n > (int)sizeof(line) - 1)
		n = sizeof(line) - 1;
	if (write(out, line, n) < 0)
		_exit(2);
}

/* Read a small file into buf, NUL-terminated, trailing newlines removed. */
static int read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n, total = 0;

	if (fd < 0)
		return -1;
	while ((size_t)total < size - 1 &&
	       (n = read(fd, buf + total, size - 1 - total)) > 0)
		total += n;
	close(fd);
	buf[total] = '\0';
	while (total > 0 && buf[total - 1] == '\n')
		buf[--total] = '\0';
	return 0;
}

static void mount_fs(const char *source, const char *target, const char *type)
{
	mkdir(target, 0755);
	if (mount(source, target, type, 0, NULL) < 0 && errno != EBUSY) {
		char msg[128];

		snprintf(msg, sizeof(msg), "%s:%s", target, strerror(errno));
		emit("mount_error", msg);
	}
}

static void report_meminfo(void)
{
	char buf[4096], *p;

	if (read_file("/proc/meminfo", buf, sizeof(buf)) < 0) {
		emit("memtotal_kb", "unknown");
		return;
	}
	p = strstr(buf, "MemTotal:");
	if (!p) {
		emit("memtotal_kb", "unknown");
		return;
	}
	p += strlen("MemTotal:");
	while (*p == ' ')
		p++;
	char num[32];
	size_t i = 0;

	while (i < sizeof(num) - 1 && p[i] >= '0' && p[i] <= '9') {
		num[i] = p[i];
		i++;
	}
	num[i] = '\0';
	emit("memtotal_kb", i ? num : "unknown");
}

static int by_number(const struct dirent **a, const struct dirent **b)
{
	return atoi((*a)->d_name) - atoi((*b)->d_name);
}

static int is_number(const struct dirent *d)
{
	return d->d_name[0] >= '0' && d->d_name[0] <= '9';
}

static void report_e820(void)
{
	struct dirent **entries;
	int n = scandir("/sys/firmware/memmap", &entries, is_number, by_number);

	if (n < 0) {
		emit("e820", "absent");
		return;
	}
	for (int i = 0; i < n; i++) {
		char path[300], start[32], end[32], type[64], value[160];
		const char *dir = entries[i]->d_name;

		snprintf(path, sizeof(path), "/sys/firmware/memmap/%s/start", dir);
		int bad = read_file(path, start, sizeof(start));
		snprintf(path, sizeof(path), "/sys/firmware/memmap/%s/end", dir);
		bad |= read_file(path, end, sizeof(end));
		snprintf(path, sizeof(path), "/sys/firmware/memmap/%s/type", dir);
		bad |= read_file(path, type, sizeof(type));
		if (!bad) {
			snprintf(value, sizeof(value), "%s-%s:%s", start, end, type);
			emit("e820", value);
		}
		free(entries[i]);
	}
	free(entries);
}

int main(void)
{
	char buf[4096];
	int fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);

	if (fd >= 0)
		out = fd;
	mount_fs("proc", "/proc", "proc");
	mount_fs("sysfs", "/sys", "sysfs");
	mount_fs("devtmpfs", "/dev", "devtmpfs");

	emit("cpus_online", read_file("/sys/devices/system/cpu/online", buf, sizeof(buf))
		 ? "unknown" : buf);
	report_meminfo();
	report_e820();
	emit("cmdline", read_file("/proc/cmdline", buf, sizeof(buf)) ? "unknown" : buf);

	static const char done[] = "KVMLITE-CHECK-DONE\n";
	if (write(out, done, sizeof(done) - 1) < 0)
		return 2;
	/* The tty sends our bytes out later, by interrupt; the kernel's own
	 * power-off messages go straight to the UART. Wait for ours first, or
	 * the two interleave on the console. */
	tcdrain(out);
	sync();
	reboot(RB_POWER_OFF);
	return 1;
}

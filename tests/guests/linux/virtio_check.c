/*
 * virtio_check: a one-process /init that exercises kvmlite's virtio devices
 * with Linux's own drivers, and reports on /dev/console in check_init's
 * "KVMLITE-CHECK key=value" format:
 *
 *   virtio_irqs=<lines of /proc/interrupts naming virtio>
 *   msix=<how many of those are PCI-MSI/MSIX>
 *   vda_sectors=<from /sys/block/vda/size>
 *   vda_fnv=<FNV-1a 64 of the disk's first 64 KiB, as read by the guest>
 *   vda_write=ok             64 KiB pattern written at 1 MiB and fsync'ed
 *   hwrng=<hex of 32 bytes from /dev/hwrng>
 *   hvc0_in=<a line the host sent to hvc0>
 *   vport=<ok, or why not>  "hello-from-vport" written to /dev/vport<N>p1
 *   net_mac=<eth0's MAC>     eth0 brought up, a broadcast frame of ethertype
 *                            0x88b5 "kvmlite-net-ping" sent on it
 *   net_rx=<token>/<length>  from the host's reply "kvmlite-net-pong:<token>"
 *   KVMLITE-CHECK-DONE
 *
 * and writes "hello-from-hvc0" to /dev/hvc0 before reading. The pattern is
 * byte i of the region = (i * 7 + 13) & 0xff, so the host can check it.
 * Build: gcc -static -O2 -o virtio_check virtio_check.c
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#define REGION (64 * 1024)
#define WRITE_AT (1024 * 1024)

static void emit(const char *key, const char *value)
{
	dprintf(1, "KVMLITE-CHECK %s=%s\n", key, value);
}

static void emit_int(const char *key, long v)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%ld", v);
	emit(key, buf);
}

static void interrupts(void)
{
	char line[512];
	long virtio = 0, msi = 0;
	FILE *f = fopen("/proc/interrupts", "r");

	if (!f) {
		emit("virtio_irqs", "unreadable");
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		if (!strstr(line, "virtio"))
			continue;
		virtio++;
		if (strstr(line, "PCI-MSI"))
			msi++;
	}
	fclose(f);
	emit_int("virtio_irqs", virtio);
	emit_int("msix", msi);
}

static void disk(void)
{
	static unsigned char buf[REGION];
	char size[64] = "absent";
	uint64_t h = 1469598103934665603ULL;
	int fd = open("/sys/block/vda/size", O_RDONLY);

	if (fd >= 0) {
		ssize_t n = read(fd, size, sizeof(size) - 1);
		size[n > 0 ? n : 0] = 0;
		size[strcspn(size, "\n")] = 0;
		close(fd);
	}
	emit("vda_sectors", size);
	fd = open("/dev/vda", O_RDWR);
	if (fd < 0 || pread(fd, buf, REGION, 0) != REGION) {
		emit("vda_fnv", "read-failed");
		return;
	}
	for (int i = 0; i < REGION; i++)
		h = (h ^ buf[i]) * 1099511628211ULL;
	char hex[32];
	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)h);
	emit("vda_fnv", hex);
	for (int i = 0; i < REGION; i++)
		buf[i] = (unsigned char)(i * 7 + 13);
	int ok = pwrite(fd, buf, REGION, WRITE_AT) == REGION && fsync(fd) == 0;
	emit("vda_write", ok ? "ok" : "failed");
	close(fd);
}

static void hwrng(void)
{
	unsigned char b[32];
	char hex[65];
	int fd = open("/dev/hwrng", O_RDONLY);

	if (fd < 0 || read(fd, b, sizeof(b)) != (ssize_t)sizeof(b)) {
		emit("hwrng", "unreadable");
		return;
	}
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", b[i]);
	emit("hwrng", hex);
	close(fd);
}

static void hvc0(void)
{
	char line[128];
	int fd = open("/dev/hvc0", O_RDWR | O_NOCTTY);

	if (fd < 0) {
		emit("hvc0_in", "absent");
		return;
	}
	if (write(fd, "hello-from-hvc0\n", 16) != 16)
		emit("hvc0_out", "failed");
	struct pollfd p = {fd, POLLIN, 0};
	ssize_t n = 0;
	if (poll(&p, 1, 120000) == 1)
		n = read(fd, line, sizeof(line) - 1);
	line[n > 0 ? n : 0] = 0;
	line[strcspn(line, "\r\n")] = 0;
	emit("hvc0_in", n > 0 ? line : "timeout");
	close(fd);
}

static void vport(void)
{
	/* The first named port of the multiport console (virtio 1.2 §5.3.6.2):
	 * /dev/vport<N>p1, N being the console's virtio device index. */
	char path[300] = "";
	DIR *dir = opendir("/dev");
	struct dirent *e;

	while (dir && (e = readdir(dir)))
		if (!strncmp(e->d_name, "vport", 5) && strstr(e->d_name, "p1") &&
		    strlen(e->d_name) < 32)
			snprintf(path, sizeof(path), "/dev/%s", e->d_name);
	if (dir)
		closedir(dir);
	int fd = path[0] ? open(path, O_WRONLY | O_NOCTTY) : -1;

	if (fd < 0) {
		emit("vport", "absent");
		return;
	}
	emit("vport", write(fd, "hello-from-vport\n", 17) == 17 ? "ok" : "write-failed");
	close(fd);
}

/* IEEE 802 "local experimental" ethertype: nothing else in the guest uses it. */
#define ETH_P_KVMLITE 0x88b5

static void net(void)
{
	int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_KVMLITE));
	struct ifreq ifr;
	unsigned char frame[1600];
	char text[64];

	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "eth0");
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
		emit("net_mac", "absent");
		return;
	}
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0 || ioctl(s, SIOCGIFHWADDR, &ifr) < 0) {
		emit("net_mac", "up-failed");
		return;
	}
	unsigned char *mac = (unsigned char *)ifr.ifr_hwaddr.sa_data;
	snprintf(text, sizeof(text), "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2],
		 mac[3], mac[4], mac[5]);
	emit("net_mac", text);
	memset(frame, 0, 60);
	memset(frame, 0xff, 6);
	memcpy(frame + 6, mac, 6);
	frame[12] = ETH_P_KVMLITE >> 8;
	frame[13] = ETH_P_KVMLITE & 0xff;
	memcpy(frame + 14, "kvmlite-net-ping", 16);
	if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) {
		emit("net_rx", "no-ifindex");
		return;
	}
	struct sockaddr_ll sll = {.sll_family = AF_PACKET,
				  .sll_protocol = htons(ETH_P_KVMLITE),
				  .sll_ifindex = ifr.ifr_ifindex};
	if (bind(s, (struct sockaddr *)&sll, sizeof(sll)) < 0 || send(s, frame, 60, 0) != 60) {
		emit("net_rx", "send-failed");
		return;
	}
	struct pollfd p = {s, POLLIN, 0};
	while (poll(&p, 1, 120000) == 1) {
		ssize_t n = recv(s, frame, sizeof(frame), 0);
		if (n > 31 && !memcmp(frame + 14, "kvmlite-net-pong:", 17)) {
			char token[17] = "";
			memcpy(token, frame + 31, n - 31 < 16 ? n - 31 : 16);
			token[strcspn(token, " ")] = 0;
			snprintf(text, sizeof(text), "%s/%zd", token, n);
			emit("net_rx", text);
			close(s);
			return;
		}
	}
	emit("net_rx", "timeout");
	close(s);
}

int main(void)
{
	mkdir("/proc", 0755);
	mkdir("/sys", 0755);
	mkdir("/dev", 0755);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	int con = open("/dev/console", O_WRONLY);
	if (con >= 0 && con != 1)
		dup2(con, 1);

	interrupts();
	disk();
	hwrng();
	hvc0();
	vport();
	net();
	dprintf(1, "KVMLITE-CHECK-DONE\n");
	tcdrain(1); /* see check_init.c: let the tty drain before power-off */
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}

/*
 * net_blast: a guest-side TCP source and sink for benchmarks/bench_net.py.
 *
 *   net_blast send HOST PORT BYTES   connect, write BYTES zero bytes, half-close,
 *                                    wait for the peer's EOF
 *   net_blast recv HOST PORT         connect, read until EOF
 *
 * busybox nc moves data through a small buffer (about 1 KiB per write on
 * Debian 12's busybox), so in an emulated guest it measures nc's system calls,
 * not the NIC; with 64 KiB writes the guest's TCP stack hands the NIC large
 * TSO frames, as a real application would.  Prints one line,
 * "BLAST: sent=N" or "BLAST: received=N", and exits 0 on success.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

static char buf[CHUNK];

static int dial(const char *host, const char *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("net_blast: connect");
		exit(1);
	}
	return fd;
}

/* Read until EOF; the byte count, or -1 on error. */
static long long drain(int fd)
{
	long long total = 0;
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0)
		total += n;
	return n < 0 ? -1 : total;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "send")) {
		long long left = atoll(argv[4]), sent = 0;
		int fd = dial(argv[2], argv[3]);

		memset(buf, 0, sizeof(buf));
		while (left > 0) {
			ssize_t n = write(fd, buf, left < CHUNK ? left : CHUNK);
			if (n <= 0) {
				perror("net_blast: write");
				return 1;
			}
			left -= n;
			sent += n;
		}
		shutdown(fd, SHUT_WR);
		if (drain(fd) < 0) {
			perror("net_blast: read");
			return 1;
		}
		printf("BLAST: sent=%lld\n", sent);
		return 0;
	}
	if (argc == 4 && !strcmp(argv[1], "recv")) {
		long long got = drain(dial(argv[2], argv[3]));
		if (got < 0) {
			perror("net_blast: read");
			return 1;
		}
		printf("BLAST: received=%lld\n", got);
		return 0;
	}
	fprintf(stderr, "usage: net_blast send HOST PORT BYTES | net_blast recv HOST PORT\n");
	return 2;
}

"""QEMU's virtio-net-pci with ``-netdev vhost-user`` served by ``kvmlite serve net``.

QEMU (``-accel tcg``) boots kvmlite's default kernel and busybox initramfs;
the network backend is ``socket,listen=PATH`` and this test is the other end
of that socket: a tiny host at 10.0.2.2 that answers ARP and ICMP echo. The
guest brings eth0 up with a static address and ``ping -c 3`` must succeed,
so frames go both ways through Linux's virtio-net driver, QEMU's vhost-user
front-end (which enables the rings with SET_VRING_ENABLE) and kvmlite's
VirtioNet; then the driver is unbound and bound again (rings stopped and
restarted) and the ping works again.
"""

from __future__ import annotations

import re
import select
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from kvmlite.guestimage import BASE_CMDLINE, SHELL_PROMPT, DefaultGuest
from kvmlite.testing.expect import Expect

from .test_qemu import QEMU, busybox_guest, procs, serve  # noqa: F401
from .test_serve_net_console import connect_when_there

pytestmark = pytest.mark.slow

GUEST_IP, PEER_IP = "10.0.2.15", "10.0.2.2"
PEER_MAC = bytes.fromhex("525400000202")
ETH_ARP, ETH_IP = 0x0806, 0x0800


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def answer(frame: bytes) -> bytes | None:
    """The peer host's reply to one frame from the guest: ARP who-has and ICMP echo."""
    if len(frame) < 14:
        return None
    dst, src, ethertype = frame[:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    if ethertype == ETH_ARP and len(frame) >= 42:
        op, sha, spa, tpa = (
            struct.unpack("!H", frame[20:22])[0],
            frame[22:28],
            frame[28:32],
            frame[38:42],
        )
        if op == 1 and tpa == socket.inet_aton(PEER_IP):
            arp = struct.pack("!HHBBH", 1, ETH_IP, 6, 4, 2) + PEER_MAC + tpa + sha + spa
            return src + PEER_MAC + struct.pack("!H", ETH_ARP) + arp
    if ethertype == ETH_IP and len(frame) >= 34 and dst == PEER_MAC:
        ip = frame[14:]
        ihl = (ip[0] & 0xF) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        if ip[9] != 1 or ip[16:20] != socket.inet_aton(PEER_IP) or ip[ihl] != 8:
            return None
        icmp = bytearray(ip[ihl:total])
        icmp[0] = 0  # echo reply
        icmp[2:4] = b"\0\0"
        icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
        hdr = bytearray(ip[:ihl])
        hdr[8] = 64
        hdr[12:16], hdr[16:20] = ip[16:20], ip[12:16]
        hdr[10:12] = b"\0\0"
        hdr[10:12] = struct.pack("!H", checksum(bytes(hdr)))
        return src + PEER_MAC + struct.pack("!H", ETH_IP) + bytes(hdr) + bytes(icmp)
    return None


class PeerHost(threading.Thread):
    """Reads length-framed frames from the backend's socket and answers them."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.stopping = False
        self.echo_requests = 0
        self.frames = 0
        self.buf = b""

    def run(self) -> None:
        while not self.stopping:
            r, _, _ = select.select([self.sock], [], [], 0.2)
            if not r:
                continue
            data = self.sock.recv(65536)
            if not data:
                return
            self.buf += data
            while len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) < 4 + n:
                    break
                frame, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
                self.frames += 1
                reply = answer(frame)
                if reply is not None:
                    if reply[12:14] == struct.pack("!H", ETH_IP):
                        self.echo_requests += 1
                    self.sock.sendall(struct.pack(">I", len(reply)) + reply)


def test_linux_pings_through_kvmlite_serve_net(
    tmp_path: Path,
    procs: list,  # noqa: F811
    busybox_guest: DefaultGuest,  # noqa: F811
) -> None:
    sock, netsock = tmp_path / "net.sock", tmp_path / "frames.sock"
    server = serve(procs, sock, "net", f"socket,listen={netsock}")
    peer = PeerHost(connect_when_there(netsock))
    peer.start()
    g = busybox_guest
    argv = [
        QEMU, "-accel", "tcg", "-M", "q35", "-m", "128", "-smp", "1",
        "-object", "memory-backend-memfd,id=mem,size=128M,share=on",
        "-numa", "node,memdev=mem",
        "-chardev", f"socket,id=c0,path={sock}",
        "-netdev", "vhost-user,id=n0,chardev=c0",
        # vectors=0 (INTx): QEMU 7.2 under TCG segfaults in vhost_net_start
        # (msix_set_vector_notifiers) with MSI-X and the control queue.
        "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,vectors=0",
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
        "-no-reboot", "-kernel", str(g.vmlinux), "-initrd", str(g.initrd),
        "-append", BASE_CMDLINE,
    ]  # fmt: skip
    c = Expect.spawn(argv)
    procs.append(c)
    try:
        c.expect(re.escape(SHELL_PROMPT), timeout=180)

        def run(cmd: str, timeout: float = 60) -> str:
            c.sendline(f"{cmd}; echo RC=$?")
            m = c.expect(rb"\r?\n((?:.*\r?\n)*?)RC=(\d+)\r?\n", timeout=timeout)
            out = m.group(1).decode(errors="replace")
            assert m.group(2) == b"0", f"{cmd!r} failed:\n{out}"
            return out

        run("ip link set eth0 up")
        run(f"ip addr add {GUEST_IP}/24 dev eth0")
        start = time.monotonic()
        out = run(f"ping -c 3 -W 5 {PEER_IP}", timeout=90)
        assert "3 packets received" in out, out
        print(f"\nguest ping over kvmlite serve net: {time.monotonic() - start:.1f} s")
        assert peer.echo_requests >= 3
        # The driver goes away and comes back: QEMU disables and stops the rings
        # (SET_VRING_ENABLE 0, GET_VRING_BASE), then starts them again.
        drv = "/sys/bus/virtio/drivers/virtio_net"
        run(f"dev=$(basename $(readlink /sys/class/net/eth0/device)); echo $dev > {drv}/unbind"
            f" && echo $dev > {drv}/bind")  # fmt: skip
        run("ip link set eth0 up")
        run(f"ip addr add {GUEST_IP}/24 dev eth0")
        out = run(f"ping -c 2 -W 5 {PEER_IP}", timeout=90)
        assert "2 packets received" in out, out
        assert peer.echo_requests >= 5
        c.sendline("poweroff -f")
        c.wait_eof(timeout=60)
    finally:
        peer.stopping = True
        peer.join(5)
        peer.sock.close()
    assert server.poll() is None  # the back-end outlives its front-end

"""QEMU's virtio-net-pci with ``-netdev vhost-user`` served by ``kvmlite serve net``.

QEMU (``-accel tcg``) boots kvmlite's default kernel and busybox initramfs
(qemu_rig.py); the network backend is ``socket,listen=PATH`` and this test is
the other end of that socket: a tiny host at 10.0.2.2 that answers ARP and
ICMP echo (kvmlite.testing.frames.Responder). The
guest brings eth0 up with a static address and ``ping -c 3`` must succeed,
so frames go both ways through Linux's virtio-net driver, QEMU's vhost-user
front-end (which enables the rings with SET_VRING_ENABLE) and kvmlite's
VirtioNet; then the driver is unbound and bound again (rings stopped and
restarted) and the ping works again.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from kvmlite.testing.frames import Responder, ip4

from . import qemu_rig
from .qemu_rig import NetGuest, serve_net, spawn, vhost_user_nic
from .test_serve_net_console import connect_when_there

pytestmark = pytest.mark.slow

# Fixtures shared with the other networking tests.
procs = qemu_rig.procs
net_guest = qemu_rig.net_guest

GUEST_IP, PEER_IP = "10.0.2.15", "10.0.2.2"
PEER_MAC = bytes.fromhex("525400000202")
GUEST_MAC = "52:54:00:12:34:56"


class PeerHost(threading.Thread):
    """Reads length-framed frames from the backend's socket and answers them."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.stopping = False
        self.host = Responder(PEER_MAC, ip4(PEER_IP))
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
                reply = self.host.answer(frame)
                if reply is not None:
                    self.sock.sendall(struct.pack(">I", len(reply)) + reply)

    @property
    def echo_requests(self) -> int:
        return self.host.answered.count("ping")


def test_linux_pings_through_kvmlite_serve_net(
    tmp_path: Path, procs: list, net_guest: NetGuest
) -> None:
    sock, netsock = tmp_path / "net.sock", tmp_path / "frames.sock"
    server = serve_net(procs, sock, f"socket,listen={netsock}")
    peer = PeerHost(connect_when_there(netsock))
    peer.start()
    try:
        shell = spawn(procs, net_guest, vhost_user_nic(sock, GUEST_MAC))
        shell.wait_ready(timeout=180)
        shell.sh("ip link set eth0 up")
        shell.sh(f"ip addr add {GUEST_IP}/24 dev eth0")
        start = time.monotonic()
        out = shell.sh(f"ping -c 3 -W 5 {PEER_IP}", timeout=90)
        assert "3 packets received" in out, out
        print(f"\nguest ping over kvmlite serve net: {time.monotonic() - start:.1f} s")
        assert peer.echo_requests >= 3
        # The driver goes away and comes back: QEMU disables and stops the rings
        # (SET_VRING_ENABLE 0, GET_VRING_BASE), then starts them again.
        drv = "/sys/bus/virtio/drivers/virtio_net"
        shell.sh(f"dev=$(basename $(readlink /sys/class/net/eth0/device)); echo $dev > {drv}/unbind"
                 f" && echo $dev > {drv}/bind")  # fmt: skip
        shell.sh("ip link set eth0 up")
        shell.sh(f"ip addr add {GUEST_IP}/24 dev eth0")
        out = shell.sh(f"ping -c 2 -W 5 {PEER_IP}", timeout=90)
        assert "2 packets received" in out, out
        assert peer.echo_requests >= 5
        shell.poweroff(timeout=60)
    finally:
        peer.stopping = True
        peer.join(5)
        peer.sock.close()
    assert server.poll() is None  # the back-end outlives its front-end

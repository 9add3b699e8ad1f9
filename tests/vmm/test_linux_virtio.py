"""Slow: Linux's own virtio drivers against kvmlite's devices, on /dev/kvm.

The minimal kernel boots with tests/guests/linux/virtio_check.c as /init,
once over virtio-pci (MSI-X) and once over virtio-mmio. Judges: the host
file for the disk (what the guest read and what it wrote), the guest's
/proc/interrupts for MSI-X, the host end of hvc0's unix socket, and the
peer of the NIC's socket backend (the frame the guest sent, the one it got).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from pathlib import Path

import pytest

from kvmlite.testing.poll import unix_listening

from .test_linux_boot import BOOT_TIMEOUT, run_check

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs /dev/kvm"),
]

REGION = 64 * 1024
WRITE_AT = 1 << 20


def fnv1a64(data: bytes) -> str:
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


@pytest.fixture(scope="module")
def guest():
    from kvmlite.guestimage import build_kernel, default_cache_dir
    from kvmlite.guestimage.initramfs import build_single_init_initramfs
    from kvmlite.guestimage.programs import GUEST_SOURCES, compile_static

    cache = default_cache_dir()
    kernel = build_kernel(cache, progress=False)
    init = compile_static(GUEST_SOURCES / "virtio_check.c", cache)
    initrd = build_single_init_initramfs(init, cache / "initramfs" / "virtio_check.cpio")
    return kernel.vmlinux, initrd


class Hvc0Peer(threading.Thread):
    """The host end of a console port: connects, sends a line, collects what
    the guest says until ``until`` shows up."""

    def __init__(self, path: Path, until: bytes = b"hello-from-hvc0") -> None:
        super().__init__(daemon=True)
        self.path = path
        self.until = until
        self.received = bytearray()

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while not unix_listening(self.path) and time.monotonic() < deadline:
            time.sleep(0.1)
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(self.path))
        s.sendall(b"ping-from-host\n")
        s.settimeout(BOOT_TIMEOUT)
        try:
            while self.until not in self.received:
                data = s.recv(4096)
                if not data:
                    break
                self.received += data
        except OSError:
            pass
        s.close()


class NetPeer(threading.Thread):
    """The other end of the NIC's ``socket,connect=PATH`` backend: answers the
    guest's "kvmlite-net-ping" broadcast with a full-size "pong" frame."""

    TOKEN = b"t0k3n"

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.server.settimeout(BOOT_TIMEOUT)
        self.pings: list[bytes] = []  # the source MACs of the pings

    def run(self) -> None:
        with self.server, self.server.accept()[0] as conn:
            buf = b""
            while data := conn.recv(65536):
                buf += data
                while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
                    n = int.from_bytes(buf[:4], "big")
                    frame, buf = buf[4 : 4 + n], buf[4 + n :]
                    if frame[12:14] == b"\x88\xb5" and frame[14:30] == b"kvmlite-net-ping":
                        self.pings.append(frame[6:12])
                        pong = frame[6:12] + bytes.fromhex("525400abcdef") + b"\x88\xb5"
                        pong += (b"kvmlite-net-pong:" + self.TOKEN).ljust(1500, b" ")
                        conn.sendall(len(pong).to_bytes(4, "big") + pong)


@pytest.mark.parametrize("transport", ["pci", "pci-intx", "mmio"])
def test_virtio_devices_with_linux_drivers(guest, tmp_path, transport):
    """pci: MSI-X; pci-intx: the same devices with ``pci=nomsi``, so the
    interrupts take the INTx lines the MP table and the DSDT _PRT describe;
    mmio: virtio-mmio devices named on the kernel command line."""
    vmlinux, initrd = guest
    disk = tmp_path / "disk.img"
    head = random.Random(7).randbytes(REGION)
    with open(disk, "wb") as f:
        f.write(head)
        f.truncate(8 << 20)
    sock = tmp_path / "hvc0.sock"
    peer = Hvc0Peer(sock)
    peer.start()
    port_sock = tmp_path / "port.sock"
    port_peer = Hvc0Peer(port_sock, until=b"hello-from-vport")
    port_peer.start()
    net_peer = NetPeer(tmp_path / "net.sock")
    net_peer.start()
    args = ["-k", str(vmlinux), "-i", str(initrd), "-m", "64",
            "-d", f"{disk},serial=kvmlite0", "--rng", "--virtio-console", f"unix:{sock}",
            "--virtio-port", f"org.kvmlite.test=unix:{port_sock}",
            "-n", f"socket,connect={tmp_path / 'net.sock'},mac=52:54:00:00:00:07",
            "--virtio-transport", transport.split("-")[0]]  # fmt: skip
    if transport == "pci-intx":
        args += ["-a", "pci=nomsi"]
    facts, status = run_check(*args)
    peer.join(10)
    port_peer.join(10)
    net_peer.join(10)

    assert status == 0
    assert facts["vda_sectors"] == [str((8 << 20) // 512)]
    assert facts["vda_fnv"] == [fnv1a64(head)]
    assert facts["vda_write"] == ["ok"]
    written = disk.read_bytes()[WRITE_AT : WRITE_AT + REGION]
    assert written == bytes((i * 7 + 13) & 0xFF for i in range(REGION))
    rng = bytes.fromhex(facts["hwrng"][0])
    assert len(rng) == 32 and len(set(rng)) > 8
    assert facts["hvc0_in"] == ["ping-from-host"]
    assert b"hello-from-hvc0" in peer.received
    assert facts["vport"] == ["ok"]  # a named port: /dev/vport<N>p1 in the guest
    assert b"hello-from-vport" in port_peer.received
    # virtio-net: Linux's driver sent a frame through the socket backend and
    # received a 1514-byte one (header stripped / prepended by the device).
    assert facts["net_mac"] == ["52:54:00:00:00:07"]
    assert net_peer.pings == [bytes.fromhex("525400000007")]
    assert facts["net_rx"] == [f"{NetPeer.TOKEN.decode()}/1514"]
    assert int(facts["virtio_irqs"][0]) >= 3
    if transport == "pci":
        assert int(facts["msix"][0]) >= 3  # MSI-X vectors for blk, rng and console queues
    else:
        assert facts["msix"] == ["0"]  # INTx through the IOAPIC, or the mmio IRQs

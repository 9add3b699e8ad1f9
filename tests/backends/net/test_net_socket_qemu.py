"""QEMU's own ``-netdev stream`` as the judge of the framing (DESIGN.md "Testers").

QEMU runs with no guest at all: its stream netdev and a user-mode (slirp)
netdev with ``restrict=on`` (nothing leaves this machine) share a hub, so an
ARP request for slirp's gateway 10.0.2.2 sent into the stream socket comes
back as slirp's ARP reply. The virtio-net test sends the request from a
MockDriver guest through ``VirtioNet`` and reads the reply from its receive
buffers.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvmlite.backends.net.socket_stream import StreamSocketBackend
from kvmlite.devices.virtio.net import VirtioNet
from kvmlite.devices.virtio.net_spec import VNET_HDR_LEN
from kvmlite.testing import attach_drivers, bytearray_memory

QEMU = "qemu-system-x86_64"
GUEST_MAC = bytes.fromhex("525400123456")
GUEST_IP = socket.inet_aton("10.0.2.15")
GATEWAY_IP = socket.inet_aton("10.0.2.2")


def arp_request() -> bytes:
    """Broadcast who-has 10.0.2.2 tell 10.0.2.15 (RFC 826)."""
    arp = struct.pack(">HHBBH", 1, 0x0800, 6, 4, 1) + GUEST_MAC + GUEST_IP + bytes(6) + GATEWAY_IP
    return b"\xff" * 6 + GUEST_MAC + b"\x08\x06" + arp


def is_arp_reply_for_gateway(frame: bytes) -> bool:
    if len(frame) < 42 or frame[:6] != GUEST_MAC or frame[12:14] != b"\x08\x06":
        return False
    op = struct.unpack(">H", frame[20:22])[0]
    return op == 2 and frame[28:32] == GATEWAY_IP and frame[32:38] == GUEST_MAC


def start_qemu(stream_opts: str, log: Path) -> subprocess.Popen[bytes]:
    if shutil.which(QEMU) is None:
        pytest.fail(f"{QEMU} is missing: install the qemu-system-x86 package (make deps)")
    argv = [
        QEMU,
        "-nodefaults",
        "-machine",
        "none",
        "-display",
        "none",
        "-netdev",
        "user,id=u,restrict=on",
        "-netdev",
        f"stream,id=s,{stream_opts}",
        "-netdev",
        "hubport,id=hu,hubid=0,netdev=u",
        "-netdev",
        "hubport,id=hs,hubid=0,netdev=s",
    ]
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 15
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"QEMU exited ({proc.returncode}) before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text()}")
        time.sleep(0.02)


@pytest.fixture
def qemu_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    path = tmp_path / "qemu-net.sock"
    log = tmp_path / "qemu.log"
    proc = start_qemu(f"server=on,addr.type=unix,addr.path={path}", log)
    try:
        wait_for(path.exists, proc, log, "its socket")
        yield str(path), proc, log
    finally:
        stop(proc)


def test_virtio_net_guest_gets_an_arp_reply_from_qemu_slirp(
    qemu_server: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    path, proc, log = qemu_server
    backend = StreamSocketBackend.connect(path)
    try:
        dev = VirtioNet(backend, mac=GUEST_MAC, queue_size=64)
        [rx, tx, _], _, _ = attach_drivers(dev, bytearray_memory(2 << 20))
        for _ in range(4):
            rx.add_chain([], [2048])
        tx.add_chain([bytes(VNET_HDR_LEN), arp_request()])
        tx.kick()
        got: list[bytes] = []

        def replied() -> bool:
            backend.service()
            dev.handle_rx(0)
            got.extend(u.written[VNET_HDR_LEN : u.length] for u in rx.get_used())
            return any(is_arp_reply_for_gateway(f) for f in got)

        wait_for(replied, proc, log, "slirp's ARP reply")
        assert backend.tx_frames == 1 and dev.stats.tx_frames == 1
    finally:
        backend.close()


def test_qemu_connects_to_our_server(tmp_path: Path) -> None:
    path = str(tmp_path / "kvmlite-net.sock")
    log = tmp_path / "qemu.log"
    server = StreamSocketBackend.listen(path)
    proc = start_qemu(f"server=off,addr.type=unix,addr.path={path}", log)
    try:

        def connected() -> bool:
            server.service()
            return server.connected

        wait_for(connected, proc, log, "QEMU to connect")
        server.send(arp_request())
        got: list[bytes] = []

        def replied() -> bool:
            got.extend(server.recv_frames())
            return any(is_arp_reply_for_gateway(f) for f in got)

        wait_for(replied, proc, log, "slirp's ARP reply")
    finally:
        stop(proc)
        server.close()

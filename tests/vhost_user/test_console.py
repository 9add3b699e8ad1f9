"""virtio-console served over vhost-user to the Python front-end (QEMU 7.2 has no
vhost-user console device). The host side is a ``unix:`` console backend; the
test is its client. Both directions, with and without VIRTIO_CONSOLE_F_MULTIPORT
(then through the control queue's DEVICE_READY / PORT_READY / PORT_OPEN).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmlite.backends.char import parse_console_spec
from kvmlite.devices.virtio.console import (
    VIRTIO_CONSOLE_CONSOLE_PORT,
    VIRTIO_CONSOLE_DEVICE_ADD,
    VIRTIO_CONSOLE_DEVICE_READY,
    VIRTIO_CONSOLE_F_MULTIPORT,
    VIRTIO_CONSOLE_PORT_OPEN,
    VIRTIO_CONSOLE_PORT_READY,
    VirtioConsole,
)
from kvmlite.testing import MockDriver
from kvmlite.vhost_user import protocol as p
from kvmlite.vhost_user.protocol import Request
from kvmlite.vhost_user.wiring import wire_console

from .conftest import Served
from .frontend import Frontend

RX, TX, CTRL_RX, CTRL_TX = 0, 1, 2, 3
CONTROL = struct.Struct("<IHH")


@pytest.fixture
def console(tmp_path: Path, serve: Callable[..., Served]):  # noqa: ANN201
    path = tmp_path / "con.sock"
    backend = parse_console_spec(f"unix:{path}")
    dev = VirtioConsole(backend, queue_size=64)
    served = serve(
        dev,
        str(tmp_path / "vhost.sock"),
        cleanup=backend.close,
        wire=lambda server: wire_console(server, dev, backend),
    )
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect(str(path))
    f = Frontend(served.path)
    yield dev, f, client
    f.close()
    client.close()


def poll_used(f: Frontend, drv: MockDriver, index: int, want: int, timeout: float = 5) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += drv.get_used()
        f.wait_call(index, 0.05)
    return got + drv.get_used()


def recv_exact(client: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = client.recv(n - len(buf))
        assert chunk, "console backend closed the connection"
        buf += chunk
    return buf


def drivers(f: Frontend, n: int) -> list[MockDriver]:
    step = f.ram_size // n
    return [MockDriver(f.memory, 64, base=i * step, data_size=step // 2) for i in range(n)]


def both_directions(f: Frontend, rx: MockDriver, tx: MockDriver, client: socket.socket) -> None:
    tx.add_chain([b"guest says hi\n"])
    tx.kick(force=True)
    assert recv_exact(client, 14) == b"guest says hi\n"
    rx.add_chain([], [64])
    rx.kick(force=True)
    client.sendall(b"host types\n")
    used = poll_used(f, rx, RX, 1)
    assert [u.written[: u.length] for u in used] == [b"host types\n"]


def test_console_both_ways_without_multiport(console) -> None:  # noqa: ANN001
    dev, f, client = console
    features = f.negotiate()
    assert f.ack(Request.SET_FEATURES, p.u64(features & ~(1 << VIRTIO_CONSOLE_F_MULTIPORT))) == 0
    assert f.set_mem_table() == 0
    rx, tx = drivers(f, 2)
    assert f.setup_ring(RX, rx) == 0 and f.setup_ring(TX, tx) == 0
    both_directions(f, rx, tx, client)


def test_console_both_ways_with_multiport(console) -> None:  # noqa: ANN001
    dev, f, client = console
    assert f.negotiate() & (1 << VIRTIO_CONSOLE_F_MULTIPORT)
    assert f.set_mem_table() == 0
    rx, tx, crx, ctx = drivers(f, 4)
    for i, drv in enumerate((rx, tx, crx, ctx)):
        assert f.setup_ring(i, drv) == 0
    client.sendall(b"early\n")  # before the port is open: kept, delivered after PORT_OPEN
    for _ in range(4):
        crx.add_chain([], [CONTROL.size + 16])
    crx.kick(force=True)

    def control(port: int, event: int, value: int) -> None:
        ctx.add_chain([CONTROL.pack(port, event, value)])
        ctx.kick(force=True)

    control(0, VIRTIO_CONSOLE_DEVICE_READY, 1)
    msgs = [u.written[: CONTROL.size] for u in poll_used(f, crx, CTRL_RX, 1)]
    assert CONTROL.pack(0, VIRTIO_CONSOLE_DEVICE_ADD, 1) in msgs
    control(0, VIRTIO_CONSOLE_PORT_READY, 1)
    msgs = [u.written[: CONTROL.size] for u in poll_used(f, crx, CTRL_RX, 2)]
    assert msgs == [
        CONTROL.pack(0, VIRTIO_CONSOLE_CONSOLE_PORT, 1),
        CONTROL.pack(0, VIRTIO_CONSOLE_PORT_OPEN, 1),
    ]
    rx.add_chain([], [64])
    rx.kick(force=True)
    control(0, VIRTIO_CONSOLE_PORT_OPEN, 1)
    assert [u.written[: u.length] for u in poll_used(f, rx, RX, 1)] == [b"early\n"]
    both_directions(f, rx, tx, client)


def test_console_input_back_pressure(console) -> None:  # noqa: ANN001
    """More input than the device buffers: the fd is unwatched, then watched again; no loss."""
    dev, f, client = console
    features = f.negotiate()
    assert f.ack(Request.SET_FEATURES, p.u64(features & ~(1 << VIRTIO_CONSOLE_F_MULTIPORT))) == 0
    assert f.set_mem_table() == 0
    rx, tx = drivers(f, 2)
    assert f.setup_ring(RX, rx) == 0 and f.setup_ring(TX, tx) == 0
    data = bytes(i * 31 % 251 for i in range(200_000))
    client.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # fill everything up: the device, then the socket
        try:
            sent += client.send(data[sent : sent + 65536])
        except BlockingIOError:
            time.sleep(0.05)
            if dev.ports[0].throttled:
                break
    assert dev.ports[0].throttled
    got = bytearray()
    deadline = time.monotonic() + 20
    while len(got) < len(data) and time.monotonic() < deadline:
        if sent < len(data):
            try:
                sent += client.send(data[sent : sent + 65536])
            except BlockingIOError:
                pass
        for _ in range(16):
            rx.add_chain([], [4096])
        rx.kick(force=True)
        for u in poll_used(f, rx, RX, 16, 0.5):
            got += u.written[: u.length]
    assert bytes(got) == data

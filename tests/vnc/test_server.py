"""VncServer on a real EventLoop and sockets; vncdotool (and a raw socket) as viewers."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from kvmlite.config.vnc import VncAddress, parse_vnc_address
from kvmlite.errors import ConfigError
from kvmlite.eventloop import EventLoop
from kvmlite.vnc.encodings import TILE
from kvmlite.vnc.server import VncServer

from . import fakeclient as fc
from . import judge
from .test_rfb import pattern, source_rgb

W, H = 96, 72


class FakeDisplay:
    def __init__(self) -> None:
        self.width, self.height, self.stride = W, H, W * 4
        self.pix = pattern(W, H)
        self.buf = memoryview(self.pix)
        self.dirty = bytearray(b"\x01" * 4)
        self.reads = 0

    def changed_tiles(self, tile: int = TILE) -> bytearray:
        self.reads += 1
        d, self.dirty = self.dirty, bytearray(4)
        return d


@pytest.fixture
def served(tmp_path):
    loop = EventLoop()
    loop.start()
    display = FakeDisplay()
    keys: list[tuple[int, bool]] = []
    pointer: list[tuple[int, int, int]] = []
    servers = []

    def make(address=None, password=None):
        address = address or VncAddress("127.0.0.1", 0)
        srv = VncServer(loop, display, address, password=password,
                        on_key=lambda k, d: keys.append((k, d)),
                        on_pointer=lambda x, y, b: pointer.append((x, y, b)))  # fmt: skip
        servers.append(srv)
        return srv

    yield make, display, keys, pointer
    for srv in servers:
        loop.call_soon(srv.close)
    loop.close()


def _wait(cond, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_parse_vnc_address() -> None:
    assert parse_vnc_address(":1") == VncAddress("127.0.0.1", 5901)
    assert parse_vnc_address("0.0.0.0:2") == VncAddress("0.0.0.0", 5902)
    assert parse_vnc_address("[::1]:0") == VncAddress("::1", 5900)
    assert parse_vnc_address("unix:/tmp/v.sock") == VncAddress(path="/tmp/v.sock")
    for bad in ("", "1", ":x", ":70000", "unix:", "host:"):
        with pytest.raises(ConfigError):
            parse_vnc_address(bad)


@pytest.mark.parametrize("encoding", [0, 16])
def test_vncdotool_sees_the_framebuffer(served, encoding) -> None:
    make, display, keys, _ = served
    srv = make()
    client = judge.connect(f"127.0.0.1::{srv.port}", fc.FMT32, encoding)
    try:
        client.refreshScreen()
        pic = judge.picture(fc.FMT32, client.factory.rects)
        for y in range(H):
            for x in range(W):
                assert pic[(x, y)] == source_rgb(display.pix, W, x, y), (x, y)
        client.keyPress("a")
        client.keyPress("enter")
        _wait(lambda: len(keys) >= 4)
        assert keys[:4] == [(0x1E, True), (0x1E, False), (0x1C, True), (0x1C, False)]
    finally:
        client.disconnect()


def test_password_and_wrong_password(served, tmp_path) -> None:
    make, *_ = served
    srv = make(password=b"s3cret")
    client = judge.connect(f"127.0.0.1::{srv.port}", fc.FMT32, 0, password="s3cret")
    client.refreshScreen()
    client.disconnect()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    assert s.recv(12) == b"RFB 003.008\n"
    s.sendall(b"RFB 003.008\n")
    assert s.recv(2) == b"\x01\x02"
    s.sendall(b"\x02")
    challenge = b""
    while len(challenge) < 16:
        challenge += s.recv(16 - len(challenge))
    s.sendall(bytes(16))
    reply = b""
    while len(reply) < 8:
        reply += s.recv(64)
    status, n = struct.unpack("!II", reply[:8])
    assert status == 1 and n > 0
    s.close()


def test_unix_socket_two_viewers_and_exclusive(served, tmp_path) -> None:
    make, display, _, pointer = served
    path = str(tmp_path / "vnc.sock")
    srv = make(VncAddress(path=path))

    def viewer(shared: int) -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(path)
        s.sendall(b"RFB 003.008\n")
        s.sendall(b"\x01" + bytes((shared,)))
        got = b""
        while len(got) < 12 + 2 + 4 + 24 + len(b"kvmlite"):
            got += s.recv(4096)
        return s

    a, b = viewer(1), viewer(1)
    _wait(lambda: srv.viewers == 2)
    a.sendall(fc.pointer_event(1, 10, 20))
    _wait(lambda: pointer == [(10, 20, 1)])
    c = viewer(0)  # exclusive: a and b go
    assert a.recv(10) == b"" and b.recv(10) == b""
    _wait(lambda: srv.viewers == 1)
    # updates are rate-bounded: an idle incremental request is answered when tiles change
    c.sendall(fc.set_encodings(0) + fc.update_request(True, 0, 0, W, H))
    data = b""
    while len(data) < 4:
        data += c.recv(1 << 20)
    assert struct.unpack("!H", data[2:4]) == (2,)  # the initial full-dirty map: 2 tile runs
    c.close()


@pytest.mark.parametrize("fmt", [f for f in fc.ALL_FORMATS], ids=str)
def test_vncdotool_raw_every_format(served, fmt) -> None:
    make, display, *_ = served
    srv = make()
    client = judge.connect(f"127.0.0.1::{srv.port}", fmt, 0)
    try:
        client.refreshScreen()
        pic = judge.picture(fmt, client.factory.rects)
        for y in range(H):
            for x in range(W):
                assert pic[(x, y)] == fc.expected_rgb(fmt, *source_rgb(display.pix, W, x, y))
    finally:
        client.disconnect()


class FakeLoop:
    """Records readers and timers; the test runs them by hand."""

    def __init__(self) -> None:
        self.readers: dict[int, object] = {}
        self.timers: list[tuple[float, object]] = []

    def add_reader(self, fd, cb) -> None:
        self.readers[fd] = cb

    def remove_reader(self, fd) -> None:
        self.readers.pop(fd, None)

    def call_later(self, delay, cb):
        self.timers.append((delay, cb))


def test_updates_are_paced_by_the_tick_one_dirty_log_read_each(tmp_path) -> None:
    loop, display = FakeLoop(), FakeDisplay()
    path = str(tmp_path / "s")
    srv = VncServer(loop, display, VncAddress(path=path), rate=30.0)
    assert loop.timers == []  # no viewer, no ticking
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    loop.readers[srv._listener.fileno()]()  # accept
    assert [d for d, _ in loop.timers] == [pytest.approx(1 / 30)]
    c.sendall(b"RFB 003.008\n\x01\x01" + fc.update_request(True, 0, 0, W, H))
    for fd, cb in list(loop.readers.items()):
        if fd != srv._listener.fileno():
            cb()
    reads = display.reads
    for _ in range(3):  # each tick: one dirty-log read, at most one update
        _, tick = loop.timers.pop()
        tick()
    assert display.reads == reads + 3 and len(loop.timers) == 1
    c.close()
    srv.close()

"""The unix stream socket net backend: framing, partial I/O, malformed lengths, server/client."""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlite.backends.net.socket_stream import MAX_FRAME_LEN, StreamSocketBackend
from kvmlite.errors import ConfigError


def readable(fd: int, timeout: float = 2.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def pump(backend: StreamSocketBackend, want: int, timeout: float = 5.0) -> list[bytes]:
    """Receive until ``want`` frames arrived (the loop a VMM would run)."""
    got: list[bytes] = []
    while len(got) < want:
        assert readable(backend.fileno(), timeout), f"only {len(got)} of {want} frames came"
        backend.service()
        got += backend.recv_frames()
    return got


def frame(i: int, size: int = 60) -> bytes:
    body = struct.pack(">I", i) * (size // 4 + 1)
    return body[:size]


@pytest.fixture
def pair() -> Iterator[tuple[StreamSocketBackend, StreamSocketBackend]]:
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a, b = StreamSocketBackend(s1, name="a"), StreamSocketBackend(s2, name="b")
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def raw_pair() -> Iterator[tuple[StreamSocketBackend, socket.socket]]:
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    b = StreamSocketBackend(s1, name="raw")
    yield b, s2
    b.close()
    s2.close()


def test_frames_both_ways(pair: tuple[StreamSocketBackend, StreamSocketBackend]) -> None:
    a, b = pair
    frames = [frame(i, 14 + i * 97) for i in range(40)] + [bytes(MAX_FRAME_LEN)]
    for f in frames:
        a.send(f)
    assert not readable(a.fileno(), 0)  # nothing for a yet
    assert pump(b, len(frames)) == frames
    b.send(b"reply")
    assert pump(a, 1) == [b"reply"]
    assert a.vnet_hdr is False and a.tx_frames == len(frames) and b.rx_frames == len(frames)


def test_wire_format_is_big_endian_length_then_frame(
    raw_pair: tuple[StreamSocketBackend, socket.socket],
) -> None:
    b, peer = raw_pair
    b.send(b"\x01\x02\x03")
    assert peer.recv(100) == b"\0\0\0\x03\x01\x02\x03"


class CountingEpoll:
    """An epoll that counts epoll_ctl calls (register/modify/unregister)."""

    def __init__(self, real: select.epoll) -> None:
        self.real = real
        self.ctl = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def register(self, fd: int, ev: int) -> None:
        self.ctl += 1
        self.real.register(fd, ev)

    def modify(self, fd: int, ev: int) -> None:
        self.ctl += 1
        self.real.modify(fd, ev)

    def unregister(self, fd: int) -> None:
        self.ctl += 1
        self.real.unregister(fd)


def test_sending_to_a_keeping_up_peer_costs_no_epoll_ctl(
    raw_pair: tuple[StreamSocketBackend, socket.socket],
) -> None:
    # send() is the per-frame hot path: with the peer keeping up the watched
    # events never change, so no epoll_ctl syscall may be made per frame.
    b, peer = raw_pair
    spy = CountingEpoll(b._epoll)
    b._epoll = spy  # type: ignore[assignment]
    for i in range(50):
        b.send(frame(i))
    assert spy.ctl == 0
    got = peer.recv(1 << 16)
    assert got.startswith(struct.pack(">I", 60) + frame(0))


def test_partial_reads_assemble_frames(raw_pair: tuple[StreamSocketBackend, socket.socket]) -> None:
    b, peer = raw_pair
    wire = b"".join(struct.pack(">I", len(f)) + f for f in (b"first", b"second!", b"x" * 300))
    got: list[bytes] = []
    for i in range(len(wire)):  # one byte at a time
        peer.sendall(wire[i : i + 1])
        assert readable(b.fileno())
        got += b.recv_frames()
        if i < 8:
            assert got == []
    assert got == [b"first", b"second!", b"x" * 300]


def test_partial_writes_to_a_slow_peer_keep_every_frame(
    raw_pair: tuple[StreamSocketBackend, socket.socket],
) -> None:
    b, peer = raw_pair
    sent = []
    i = 0
    while b.can_send():  # fill the socket and our buffer: send() never blocks
        f = frame(i, 1000 + i % 500)
        b.send(f)
        sent.append(f)
        i += 1
    assert b.wants_write() and len(sent) > 100
    # The peer reads slowly; the backend writes out the rest as the socket takes it.
    reader = StreamSocketBackend(peer.dup(), name="reader")
    try:
        got: list[bytes] = []
        while len(got) < len(sent):
            if readable(b.fileno(), 0):
                b.service()
            assert readable(reader.fileno()), f"stalled after {len(got)} frames"
            got += reader.recv_frames()
        assert got == sent and not b.wants_write() and b.can_send()
    finally:
        reader.close()


@pytest.mark.parametrize("length", [0, MAX_FRAME_LEN + 1, 0xFFFFFFFF])
def test_malformed_length_closes_the_connection_with_a_log_line(
    raw_pair: tuple[StreamSocketBackend, socket.socket],
    length: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    b, peer = raw_pair
    peer.sendall(struct.pack(">I", 2) + b"ok" + struct.pack(">I", length) + b"junk")
    assert readable(b.fileno())
    with caplog.at_level(logging.WARNING, logger="kvmlite.backends.net"):
        assert b.recv_frames() == [b"ok"]  # what came before the garbage is kept
    assert not b.connected and b.closed
    assert "frame length" in caplog.text
    assert peer.recv(10) == b""  # the peer sees the connection closed
    b.send(b"nowhere")
    assert b.tx_dropped == 1


def test_set_reading_off_stops_input_wakeups(
    pair: tuple[StreamSocketBackend, StreamSocketBackend],
) -> None:
    a, b = pair
    a.send(b"held back")
    b.set_reading(False)
    assert not readable(b.fileno(), 0.05)
    b.set_reading(True)
    assert pump(b, 1) == [b"held back"]


def test_peer_leaving_while_not_reading_loses_nothing(
    pair: tuple[StreamSocketBackend, StreamSocketBackend],
) -> None:
    a, b = pair
    b.set_reading(False)
    a.send(b"last words")
    a.close()
    assert not readable(b.fileno(), 0.05)  # no busy wake-ups for the hang-up
    b.set_reading(True)
    assert pump(b, 1) == [b"last words"]
    assert b.closed and not b.connected


def test_server_and_client_over_a_path(tmp_path: Path) -> None:
    path = str(tmp_path / "net.sock")
    server = StreamSocketBackend.listen(path)
    clients: list[StreamSocketBackend] = []
    try:
        with pytest.raises(ConfigError, match="stale socket"):
            StreamSocketBackend.listen(path)
        server.send(b"before anyone came")
        assert server.tx_dropped == 1
        clients.append(StreamSocketBackend.connect(path))
        assert readable(server.fileno())
        server.service()
        assert server.connected
        clients[0].send(b"hello server")
        assert pump(server, 1) == [b"hello server"]
        server.send(b"hello client")
        assert pump(clients[0], 1) == [b"hello client"]
        # A second client is turned away; the first keeps working.
        clients.append(StreamSocketBackend.connect(path))
        assert readable(server.fileno())
        server.service()
        assert readable(clients[1].fileno())
        assert clients[1].recv_frames() == [] and clients[1].closed
        # The first client leaves; the server takes a new one.
        clients[0].close()
        assert readable(server.fileno())
        assert server.recv_frames() == [] and not server.connected and not server.closed
        clients.append(StreamSocketBackend.connect(path))
        assert readable(server.fileno())
        server.service()
        clients[2].send(b"again")
        assert pump(server, 1) == [b"again"]
    finally:
        for c in clients:
            c.close()
        server.close()
    assert not (tmp_path / "net.sock").exists()


def test_connect_to_nothing_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="start the peer"):
        StreamSocketBackend.connect(str(tmp_path / "missing.sock"))
    with pytest.raises(ConfigError, match="cannot listen"):
        StreamSocketBackend.listen(str(tmp_path / "no" / "dir.sock"))


@pytest.mark.parametrize("side", ["listen", "connect"])
def test_failed_construction_leaks_no_fd_and_no_socket_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: str
) -> None:
    # Building the backend fails after its socket was made (epoll_ctl refused):
    # the socket, the epoll and, for a server, the bound path are all released.
    from kvmlite.backends.net import socket_stream

    path = str(tmp_path / "sock")
    server = StreamSocketBackend.listen(path) if side == "connect" else None
    real_epoll = select.epoll
    calls = []

    def epoll_then_fail() -> select.epoll:
        ep = real_epoll()
        calls.append(ep)

        class Failing:
            def __getattr__(self, name: str) -> object:
                return getattr(ep, name)

            def register(self, fd: int, ev: int) -> None:
                raise OSError(28, "No space left on device")  # max_user_watches

        return Failing()  # type: ignore[return-value]

    before = set(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(socket_stream.select, "epoll", epoll_then_fail)
    with pytest.raises(OSError, match="No space left"):
        getattr(StreamSocketBackend, side)(path)
    monkeypatch.undo()
    assert calls and all(ep.closed for ep in calls)
    assert set(os.listdir("/proc/self/fd")) == before
    if server is None:
        assert not os.path.exists(path)  # the half-made server's socket file is gone
    else:
        server.close()

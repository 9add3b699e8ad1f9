"""virtio-net served over vhost-user to the Python front-end, frames over a socketpair.

The network backend is a ``StreamSocketBackend`` on one end of a socketpair
(4-byte length framing); the test is the peer on the other end. Checks
frames both ways, receive back-pressure (no guest buffers: frames wait, in
order) and the ring states of vhost-user.rst (a disabled receive ring gets
nothing until SET_VRING_ENABLE).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmlite.backends.net.socket_stream import StreamSocketBackend
from kvmlite.devices.virtio import VirtioNet
from kvmlite.devices.virtio.net_spec import VNET_HDR_LEN
from kvmlite.testing import MockDriver
from kvmlite.vhost_user import protocol as p
from kvmlite.vhost_user.protocol import Request
from kvmlite.vhost_user.wiring import wire_net

from .conftest import Served
from .frontend import Frontend

RX, TX = 0, 1
MAC = "52:54:00:aa:bb:cc"


class Peer:
    """The other end of the backend's socket: length-framed Ethernet frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(5)

    def send(self, frame: bytes) -> None:
        self.sock.sendall(struct.pack(">I", len(frame)) + frame)

    def recv(self) -> bytes:
        (n,) = struct.unpack(">I", self._exact(4))
        return self._exact(n)

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            assert chunk, "backend closed the socket"
            buf += chunk
        return buf


def frame(i: int, size: int = 100) -> bytes:
    dst, src = bytes.fromhex("525400aabbcc"), bytes.fromhex("525400000001")
    return dst + src + b"\x88\xb5" + bytes([i]) * (size - 14)


@pytest.fixture
def net(tmp_path: Path, serve: Callable[..., Served]):  # noqa: ANN201
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    backend = StreamSocketBackend(a, name="test-net")
    dev = VirtioNet(backend, mac=MAC, queue_size=64)
    served = serve(
        dev,
        str(tmp_path / "net.sock"),
        cleanup=backend.close,
        wire=lambda server: wire_net(server, dev, [backend]),
    )
    f = Frontend(served.path)
    yield served, dev, f, Peer(b)
    f.close()
    b.close()


def start(f: Frontend, *, enable_rx: bool = True) -> tuple[MockDriver, MockDriver]:
    f.negotiate()
    assert f.set_mem_table() == 0
    rx = MockDriver(f.memory, 64, base=0, data_size=256 << 10)
    tx = MockDriver(f.memory, 64, base=512 << 10, data_size=256 << 10)
    assert f.setup_ring(RX, rx, enable=enable_rx) == 0
    assert f.setup_ring(TX, tx) == 0
    return rx, tx


def poll_used(f: Frontend, drv: MockDriver, index: int, want: int, timeout: float = 5) -> list:
    got: list = []
    for _ in range(int(timeout / 0.05)):
        got += drv.get_used()
        if len(got) >= want:
            break
        f.wait_call(index, 0.05)
    return got


def give_rx_buffers(rx: MockDriver, n: int, size: int = 2048) -> None:
    for _ in range(n):
        rx.add_chain([], [size])
    rx.kick(force=True)


def round_trip(
    f: Frontend, rx: MockDriver, tx: MockDriver, peer: Peer, out: int, back: int
) -> None:
    """``frame(out)`` from the guest reaches the peer; ``frame(back)`` from the peer lands in
    a receive buffer of the guest's, behind a virtio-net header."""
    tx.add_chain([bytes(VNET_HDR_LEN) + frame(out)])
    tx.kick(force=True)
    assert peer.recv() == frame(out)
    give_rx_buffers(rx, 1)
    peer.send(frame(back))
    used = poll_used(f, rx, RX, 1)
    assert [u.written[VNET_HDR_LEN : u.length] for u in used] == [frame(back)]


def test_frames_both_ways(net) -> None:  # noqa: ANN001
    served, dev, f, peer = net
    assert f.call_u64(Request.GET_QUEUE_NUM) == 3  # rx, tx, control
    # No CONFIG for net: QEMU's virtio-net keeps its own config (and warns if offered).
    offered = f.call_u64(Request.GET_PROTOCOL_FEATURES)
    assert not offered & (1 << p.ProtocolFeature.CONFIG)
    assert offered & (1 << p.ProtocolFeature.MQ) and offered & (1 << p.ProtocolFeature.REPLY_ACK)
    rx, tx = start(f)
    # guest -> host: header + frame in the transmit ring, the frame on the socket
    for i in range(3):
        tx.add_chain([bytes(VNET_HDR_LEN) + frame(i)])
    tx.kick(force=True)
    assert [peer.recv() for _ in range(3)] == [frame(i) for i in range(3)]
    assert len(poll_used(f, tx, TX, 3)) == 3
    # host -> guest: each frame in a receive buffer behind a virtio-net header
    give_rx_buffers(rx, 4)
    big = frame(9, 1514)
    for fr in (frame(7), big):
        peer.send(fr)
    used = poll_used(f, rx, RX, 2)
    assert [u.written[VNET_HDR_LEN : u.length] for u in used] == [frame(7), big]
    for u in used:  # num_buffers = 1 (mergeable buffers negotiated, one buffer each)
        assert struct.unpack_from("<H", u.written, 10)[0] == 1


def test_receive_back_pressure_keeps_frames_in_order(net) -> None:  # noqa: ANN001
    served, dev, f, peer = net
    rx, _ = start(f)
    frames = [frame(i) for i in range(20)]
    for fr in frames:
        peer.send(fr)
    assert poll_used(f, rx, RX, 1, 0.5) == []  # no buffers: nothing delivered, nothing lost
    assert dev.throttled[0]
    got = []
    while len(got) < len(frames):
        give_rx_buffers(rx, 3)  # a few at a time: throttle, resume, throttle...
        got += poll_used(f, rx, RX, min(3, len(frames) - len(got)))
    assert [u.written[VNET_HDR_LEN : u.length] for u in got] == frames
    assert dev.stats.rx_frames == len(frames)


def test_disabled_rx_ring_gets_nothing_until_enabled(net) -> None:  # noqa: ANN001
    served, dev, f, peer = net
    rx, _ = start(f, enable_rx=False)
    give_rx_buffers(rx, 2)
    peer.send(frame(1))
    assert poll_used(f, rx, RX, 1, 0.5) == []  # disabled: the device must not write into it
    assert f.ack(Request.SET_VRING_ENABLE, p.vring_state(RX, 1)) == 0
    used = poll_used(f, rx, RX, 1)
    assert [u.written[VNET_HDR_LEN : u.length] for u in used] == [frame(1)]
    # Disabled again (QEMU does this before GET_VRING_BASE): new frames wait.
    assert f.ack(Request.SET_VRING_ENABLE, p.vring_state(RX, 0)) == 0
    peer.send(frame(2))
    assert poll_used(f, rx, RX, 1, 0.5) == []
    assert f.ack(Request.SET_VRING_ENABLE, p.vring_state(RX, 1)) == 0
    assert [u.written[VNET_HDR_LEN : u.length] for u in poll_used(f, rx, RX, 1)] == [frame(2)]


def test_next_frontend_gets_the_network(net, tmp_path: Path) -> None:  # noqa: ANN001
    served, dev, f, peer = net
    rx, tx = start(f)
    f.close()
    f2 = Frontend(served.path)
    try:
        rx, tx = start(f2)
        round_trip(f2, rx, tx, peer, 5, 6)
    finally:
        f2.close()
    f.close = lambda: None  # type: ignore[method-assign]  # closed above


def test_two_queue_pairs_each_with_its_backend(
    tmp_path: Path, serve: Callable[..., Served]
) -> None:
    """Multiqueue: pair i's rings talk to backend i only (QEMU enables pairs with
    SET_VRING_ENABLE; the control queue, and its MQ command, stay in QEMU)."""
    socks = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    backends = [StreamSocketBackend(a, name=f"test-net{i}") for i, (a, _) in enumerate(socks)]
    dev = VirtioNet(backends, mac=MAC, queue_size=64)
    served = serve(
        dev,
        str(tmp_path / "mq.sock"),
        cleanup=lambda: [b.close() for b in backends],
        wire=lambda server: wire_net(server, dev, backends),
    )
    peers = [Peer(b) for _, b in socks]
    f = Frontend(served.path, ram_size=2 << 20)
    try:
        assert f.call_u64(Request.GET_QUEUE_NUM) == 5
        f.negotiate()
        assert f.set_mem_table() == 0
        drv = [MockDriver(f.memory, 64, base=i << 19, data_size=256 << 10) for i in range(4)]
        for i, d in enumerate(drv):
            assert f.setup_ring(i, d) == 0
        for pair in (0, 1):
            rx, tx = drv[2 * pair], drv[2 * pair + 1]
            tx.add_chain([bytes(VNET_HDR_LEN) + frame(10 + pair)])
            tx.kick(force=True)
            assert peers[pair].recv() == frame(10 + pair)
            give_rx_buffers(rx, 1)
            peers[pair].send(frame(20 + pair))
            used = poll_used(f, rx, 2 * pair, 1)
            assert [u.written[VNET_HDR_LEN : u.length] for u in used] == [frame(20 + pair)]
        for p_ in peers:  # nothing crossed over to the other pair
            p_.sock.settimeout(0.2)
            with pytest.raises(TimeoutError):
                p_.sock.recv(1)
    finally:
        f.close()
        for _, b in socks:
            b.close()


def test_used_entries_of_one_frame_are_published_together() -> None:
    """The queue hook net relies on (§5.1.6.4.2): ``add_used(publish=False)``
    leaves used idx alone until ``publish_used``. Without it a guest running
    beside the back-end saw a frame's first buffer alone and dropped the
    frame (Linux "rx error: buffers missing", counted as frame errors)."""
    from kvmlite.devices.virtio.queue import VirtQueue
    from kvmlite.testing import bytearray_memory

    mem = bytearray_memory(1 << 20)
    drv = MockDriver(mem, 8)
    q = VirtQueue(8)
    drv.configure(q)
    for _ in range(3):
        drv.add_chain([], [64])
    heads = [c.head for c in (q.pop(mem), q.pop(mem), q.pop(mem)) if c is not None]
    q.add_used(mem, heads[0], 64, publish=False)
    q.add_used(mem, heads[1], 64, publish=False)
    assert drv.used_idx == 0
    q.add_used(mem, heads[2], 10, publish=False)
    q.publish_used(mem)
    assert drv.used_idx == 3
    assert [u.length for u in drv.get_used()] == [64, 64, 10]

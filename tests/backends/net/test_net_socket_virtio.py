"""Two virtio-net devices wired back to back through the unix stream socket backend."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from kvmlite.backends.net.socket_stream import StreamSocketBackend
from kvmlite.devices.virtio.net import VirtioNet
from kvmlite.devices.virtio.net_spec import VNET_HDR_LEN
from kvmlite.testing import MockDriver, attach_drivers, bytearray_memory

MAC_A = bytes.fromhex("525400000001")
MAC_B = bytes.fromhex("525400000002")


class Nic:
    """One guest NIC plus the VMM loop glue docs/networking.md describes."""

    def __init__(self, sock: socket.socket, mac: bytes, memory_size: int = 2 << 20) -> None:
        self.backend = StreamSocketBackend(sock)
        self.dev = VirtioNet(self.backend, mac=mac, queue_size=64)
        self.dev.rx_ready_handler = lambda pair: self.backend.set_reading(True)
        self.drivers, _, _ = attach_drivers(self.dev, bytearray_memory(memory_size))

    @property
    def rx(self) -> MockDriver:
        return self.drivers[0]

    @property
    def tx(self) -> MockDriver:
        return self.drivers[1]

    def on_readable(self) -> None:
        self.backend.service()
        if not self.dev.handle_rx(0):
            self.backend.set_reading(False)

    def send(self, dst: bytes, payload: bytes) -> bytes:
        f = dst + self.dev.mac + b"\x88\xb5" + payload
        self.tx.add_chain([bytes(VNET_HDR_LEN), f])
        self.tx.kick()
        assert len(self.tx.get_used()) == 1  # sent at once (and the descriptors freed)
        return f

    def close(self) -> None:
        self.backend.close()


def run_loop(nics: list[Nic], timeout: float = 0.2) -> None:
    """Serve readable backends until nothing happens for ``timeout`` seconds."""
    while True:
        ready, _, _ = select.select([n.backend.fileno() for n in nics], [], [], timeout)
        if not ready:
            return
        for n in nics:
            if n.backend.fileno() in ready:
                n.on_readable()


@pytest.fixture
def nics() -> Iterator[tuple[Nic, Nic]]:
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a, b = Nic(s1, MAC_A), Nic(s2, MAC_B)
    yield a, b
    a.close()
    b.close()


def received(nic: Nic) -> list[bytes]:
    return [u.written[VNET_HDR_LEN : u.length] for u in nic.rx.get_used()]


def test_frames_cross_between_two_guests(nics: tuple[Nic, Nic]) -> None:
    a, b = nics
    for _ in range(4):
        a.rx.add_chain([], [2048])
        b.rx.add_chain([], [2048])
    f1 = a.send(MAC_B, b"ping from a")
    f2 = a.send(MAC_B, b"x" * 1500)
    run_loop([a, b])
    assert received(b) == [f1, f2]
    f3 = b.send(MAC_A, b"pong from b")
    run_loop([a, b])
    assert received(a) == [f3]


def test_back_pressure_through_the_socket_loses_nothing(nics: tuple[Nic, Nic]) -> None:
    a, b = nics
    sent = [a.send(MAC_B, f"frame {i}".encode() * 20) for i in range(50)]
    run_loop([a, b])  # b has no receive buffers: it stops reading
    assert received(b) == [] and b.dev.throttled[0]
    got: list[bytes] = []
    posted = 0  # receive buffers the guest has out (the ring holds 64)
    for _ in range(200):
        if len(got) == len(sent):
            break
        while posted < 7:
            b.rx.add_chain([], [2048])
            posted += 1
        b.rx.kick()  # the guest refills: rx_ready_handler turns reading on
        run_loop([a, b], 0.05)
        new = received(b)
        posted -= len(new)
        got += new
    assert got == sent


def test_transmit_back_pressure_from_a_slow_peer_loses_nothing() -> None:
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a, b = Nic(s1, MAC_A, 8 << 20), Nic(s2, MAC_B, 8 << 20)
    try:
        sent = []
        for i in range(30):  # ~1.8 MB: far more than the socket and the backend buffer hold
            f = MAC_B + MAC_A + b"\x88\xb5" + bytes([i]) * 60000
            a.tx.add_chain([bytes(VNET_HDR_LEN), f])
            sent.append(f)
        a.tx.kick()
        run_loop([a, b])  # b has no receive buffers: nothing moves any more
        assert a.dev.tx_blocked[0] and not a.backend.can_send()
        assert len(a.tx.get_used()) < 30  # the rest wait in the guest's ring
        got: list[bytes] = []
        posted = 0
        for _ in range(200):
            if len(got) == len(sent):
                break
            while posted < 4:
                b.rx.add_chain([], [VNET_HDR_LEN + 60014])
                posted += 1
            b.rx.kick()
            run_loop([a, b], 0.05)
            new = received(b)
            posted -= len(new)
            got += new
            a.tx.get_used()
        assert got == sent and not a.dev.tx_blocked[0]
    finally:
        a.close()
        b.close()

"""TapBackend's output queue, read budget and offload mapping, on a stand-in fd (no root needed).

A unix SOCK_SEQPACKET socket keeps message boundaries like a tap fd (one
frame per read/write) but, unlike a tap, fills up and says EAGAIN, which is
what the rarely taken queueing path needs.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.backends.net import tap
from kvmlite.backends.net.tap import MAX_QUEUED, READ_FRAMES, TapBackend, tun_offloads
from kvmlite.backends.net.tap_open import (
    TUN_F_CSUM,
    TUN_F_TSO4,
    TUN_F_TSO6,
    TUN_F_TSO_ECN,
    TUN_F_UFO,
)
from kvmlite.devices.virtio.net_spec import (
    VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_ECN,
    VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_GUEST_UFO,
    VIRTIO_NET_F_HOST_TSO4,
)


@pytest.fixture
def pair() -> Iterator[tuple[TapBackend, socket.socket]]:
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    b = TapBackend(os.dup(ours.fileno()), "fake0", vnet_hdr=False)
    ours.close()
    yield b, peer
    b.close()
    peer.close()


def readable(b: TapBackend, timeout: float = 0.0) -> bool:
    return bool(select.select([b.fileno()], [], [], timeout)[0])


def test_eagain_queues_frames_in_order_and_service_flushes(
    pair: tuple[TapBackend, socket.socket],
) -> None:
    b, peer = pair
    b.set_reading(False)
    sent = []
    i = 0
    while b.can_send():
        f = i.to_bytes(4, "big") * 1000
        b.send(f)
        sent.append(f)
        i += 1
        assert i < 100_000
    assert b.wants_write() and len(b._out) == MAX_QUEUED
    assert b.tx_dropped == 0
    assert not readable(b)  # the peer is full: nothing to do yet
    got = []
    while len(got) < len(sent):
        while True:
            try:
                got.append(peer.recv(8192, socket.MSG_DONTWAIT))
            except BlockingIOError:
                break
        if b.wants_write():
            assert readable(b, 1.0)  # writable again: the loop wakes and calls service()
            b.service()
    assert got == sent and not b.wants_write() and b.can_send()
    assert b.tx_frames == len(sent)
    assert not readable(b)


def test_read_budget_in_frames_and_bytes(
    pair: tuple[TapBackend, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    b, peer = pair
    for i in range(READ_FRAMES + 5):
        peer.send(bytes([i]) * 60)
    assert readable(b)
    first = b.recv_frames()
    assert first == [bytes([i]) * 60 for i in range(READ_FRAMES)]
    assert len(b.recv_frames()) == 5 and b.recv_frames() == []
    # The byte budget, made smaller so the stand-in socket's buffer can hold more than it.
    monkeypatch.setattr(tap, "READ_BUDGET", 100_000)
    for _ in range(6):
        peer.send(bytes(30_000))
    assert len(b.recv_frames()) == 4  # 90 000 bytes are under the budget, 120 000 not
    assert len(b.recv_frames()) == 2
    assert b.rx_frames == READ_FRAMES + 5 + 6


def test_reading_off_is_not_readable(pair: tuple[TapBackend, socket.socket]) -> None:
    b, peer = pair
    b.set_reading(False)
    peer.send(b"x" * 60)
    assert not readable(b, 0.05)
    b.set_reading(True)
    assert readable(b) and b.recv_frames() == [b"x" * 60]


def test_empty_and_oversized_frames_are_dropped(pair: tuple[TapBackend, socket.socket]) -> None:
    b, peer = pair
    b.send(b"")
    b.send(bytes(70000))
    assert b.tx_dropped == 2 and b.tx_frames == 0


def test_peer_gone_counts_drops(pair: tuple[TapBackend, socket.socket]) -> None:
    b, peer = pair
    peer.close()
    b.send(bytes(60))  # EPIPE-like errors: counted, never raised
    b.send(bytes(60))
    assert b.tx_dropped == 2 and not b.wants_write()


def test_offload_map() -> None:
    bit = lambda n: 1 << n  # noqa: E731
    assert tun_offloads(0) == 0
    assert tun_offloads(bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4)) == 0
    assert tun_offloads(bit(VIRTIO_NET_F_GUEST_CSUM)) == TUN_F_CSUM
    every = (
        bit(VIRTIO_NET_F_GUEST_CSUM)
        | bit(VIRTIO_NET_F_GUEST_TSO4)
        | bit(VIRTIO_NET_F_GUEST_TSO6)
        | bit(VIRTIO_NET_F_GUEST_ECN)
        | bit(VIRTIO_NET_F_GUEST_UFO)
    )
    want = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO
    assert tun_offloads(every) == want


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_offloads_never_without_checksum(features: int) -> None:
    flags = tun_offloads(features)
    assert flags == 0 or flags & TUN_F_CSUM
    assert flags & ~(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO) == 0
    assert bool(flags & TUN_F_TSO4) == bool(
        features >> VIRTIO_NET_F_GUEST_TSO4 & 1 and features >> VIRTIO_NET_F_GUEST_CSUM & 1
    )

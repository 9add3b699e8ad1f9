"""virtio-net control queue (§5.1.6.5) and the receive filter it programs; multiqueue."""

from __future__ import annotations

import struct

from test_virtio_net import GUEST_MAC, MAC, PEER_MAC, FakeNetBackend, eth, make

from kvmlite.devices.virtio.net import VirtioNet
from kvmlite.devices.virtio.net_spec import (
    VIRTIO_NET_CTRL_ANNOUNCE,
    VIRTIO_NET_CTRL_ANNOUNCE_ACK,
    VIRTIO_NET_CTRL_MAC,
    VIRTIO_NET_CTRL_MAC_ADDR_SET,
    VIRTIO_NET_CTRL_MAC_TABLE_SET,
    VIRTIO_NET_CTRL_MQ,
    VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
    VIRTIO_NET_CTRL_RX,
    VIRTIO_NET_CTRL_RX_ALLMULTI,
    VIRTIO_NET_CTRL_RX_PROMISC,
    VIRTIO_NET_ERR,
    VIRTIO_NET_F_CTRL_RX,
    VIRTIO_NET_F_GUEST_ANNOUNCE,
    VIRTIO_NET_F_MQ,
    VIRTIO_NET_OK,
    VIRTIO_NET_S_ANNOUNCE,
    VNET_HDR_LEN,
)
from kvmlite.devices.virtio.spec import bit
from kvmlite.testing import MockDriver, attach_drivers, bytearray_memory

BROADCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e000001")


def ctrl(drv: MockDriver, cls: int, cmd: int, data: bytes = b"") -> int:
    """Send one control command; return the ack byte the device wrote."""
    drv.add_chain([bytes([cls, cmd]) + data], [1])
    drv.kick(force=True)
    [u] = drv.get_used()
    assert u.length == 1
    return u.written[0]


def mac_tables(uni: list[bytes], multi: list[bytes]) -> bytes:
    return (
        struct.pack("<I", len(uni))
        + b"".join(uni)
        + struct.pack("<I", len(multi))
        + b"".join(multi)
    )


def received(dev: VirtioNet, backend: FakeNetBackend, drv: MockDriver, frames: list[bytes]) -> list:
    for _ in frames:
        drv.add_chain([], [1600])
    backend.inbox = list(frames)
    dev.handle_rx(0)
    out = [u.written[VNET_HDR_LEN : u.length] for u in drv.get_used() if u.length]
    # Buffers the filter left unused stay in the ring for the next frames.
    assert not dev.pending[0]
    return out


def test_promisc_default_then_filter_by_mac() -> None:
    dev, backend, drv, _, _ = make()
    ctrlq = drv[dev.ctrl_queue]
    other = bytes.fromhex("525400999999")
    frames = [eth(GUEST_MAC, b"1"), eth(other, b"2"), eth(BROADCAST, b"3"), eth(MCAST, b"4")]
    # Out of reset the device is promiscuous (like QEMU), until the driver says otherwise.
    assert received(dev, backend, drv[0], frames) == frames
    assert ctrl(ctrlq, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, b"\0") == VIRTIO_NET_OK
    assert ctrl(ctrlq, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, b"\0") == VIRTIO_NET_OK
    got = received(dev, backend, drv[0], frames)
    assert got == [frames[0], frames[2]]
    assert dev.stats.rx_filtered == 2
    table = mac_tables([other], [MCAST])
    assert ctrl(ctrlq, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, table) == VIRTIO_NET_OK
    assert received(dev, backend, drv[0], frames) == frames
    empty = mac_tables([], [])
    assert ctrl(ctrlq, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, empty) == VIRTIO_NET_OK
    assert ctrl(ctrlq, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, b"\1") == VIRTIO_NET_OK
    assert received(dev, backend, drv[0], frames) == [frames[0], frames[2], frames[3]]


def test_mac_table_set_rejects_malformed_tables() -> None:
    dev, _, drv, _, _ = make()
    ctrlq = drv[dev.ctrl_queue]
    bad = [
        b"",
        struct.pack("<I", 1),  # one entry announced, none there
        mac_tables([PEER_MAC], [])[:-2],  # multicast count cut short
        mac_tables([], []) + b"x",  # trailing bytes
        struct.pack("<I", 0xFFFFFFFF) + PEER_MAC,  # a count far past the data
    ]
    for data in bad:
        assert ctrl(ctrlq, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, data) == (
            VIRTIO_NET_ERR
        )
    assert dev.uni_macs == () and not dev.broken


def test_mac_address_set_changes_config_and_filter() -> None:
    dev, backend, drv, _, _ = make()
    ctrlq = drv[dev.ctrl_queue]
    new = bytes.fromhex("525400abcdef")
    assert ctrl(ctrlq, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, new) == VIRTIO_NET_OK
    assert dev.read_config(0, 6) == new
    assert ctrl(ctrlq, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, new[:5]) == VIRTIO_NET_ERR
    ctrl(ctrlq, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, b"\0")
    assert received(dev, backend, drv[0], [eth(GUEST_MAC, b"old"), eth(new, b"new")]) == [
        eth(new, b"new")
    ]
    dev.reset()
    assert dev.mac == GUEST_MAC and dev.promisc


def test_announce_sets_status_and_ack_clears_it() -> None:
    dev, _, drv, _, cfg = make()
    dev.announce()
    assert dev.read_config(6, 2) == struct.pack("<H", 1 | VIRTIO_NET_S_ANNOUNCE)
    assert cfg.count == 1
    ack = ctrl(drv[dev.ctrl_queue], VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK)
    assert ack == VIRTIO_NET_OK
    assert dev.read_config(6, 2) == struct.pack("<H", 1)


def test_commands_of_features_not_negotiated_are_errors() -> None:
    dev0 = VirtioNet(FakeNetBackend(), mac=MAC)
    features = dev0.avail_features & ~bit(VIRTIO_NET_F_CTRL_RX) & ~bit(VIRTIO_NET_F_GUEST_ANNOUNCE)
    dev, _, drv, _, _ = make(features=features)
    ctrlq = drv[dev.ctrl_queue]
    assert ctrl(ctrlq, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, b"\0") == VIRTIO_NET_ERR
    assert ctrl(ctrlq, VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK) == VIRTIO_NET_ERR
    assert ctrl(ctrlq, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, b"\1\0") == (
        VIRTIO_NET_ERR
    )
    assert ctrl(ctrlq, 99, 0) == VIRTIO_NET_ERR
    assert dev.promisc and not dev.broken


def test_ack_goes_in_the_last_writable_byte() -> None:
    dev, _, drv, _, _ = make()
    ctrlq = drv[dev.ctrl_queue]
    ctrlq.add_chain([bytes([VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC]), b"\0"], [3, 0])
    ctrlq.kick(force=True)
    [u] = ctrlq.get_used()
    assert u.written == b"\xaa\xaa\x00" and not dev.promisc


def test_multiqueue_pairs_have_their_own_backends() -> None:
    backends = [FakeNetBackend(), FakeNetBackend()]
    dev = VirtioNet(backends, mac=MAC, queue_size=64)
    assert dev.avail_features & bit(VIRTIO_NET_F_MQ)
    assert dev.num_queues == 5 and dev.ctrl_queue == 4
    assert struct.unpack("<H", dev.read_config(8, 2)) == (2,)
    drv, _, _ = attach_drivers(dev, bytearray_memory(4 << 20))
    ctrlq = drv[dev.ctrl_queue]
    assert ctrl(ctrlq, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, b"\2\0") == (
        VIRTIO_NET_OK
    )
    assert ctrl(ctrlq, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, b"\3\0") == (
        VIRTIO_NET_ERR
    )
    assert dev.active_pairs == 2
    drv[3].add_chain([bytes(VNET_HDR_LEN) + eth(PEER_MAC, b"via pair 1")])
    drv[3].kick(force=True)
    assert backends[1].sent == [eth(PEER_MAC, b"via pair 1")] and backends[0].sent == []
    drv[2].add_chain([], [1600])
    backends[1].inbox = [eth(GUEST_MAC, b"in on pair 1")]
    assert dev.handle_rx(1)
    [u] = drv[2].get_used()
    assert u.written[VNET_HDR_LEN : u.length] == eth(GUEST_MAC, b"in on pair 1")


def test_mac_tables_longer_than_the_filter_let_that_kind_through() -> None:
    dev, backend, drv, _, _ = make()
    ctrlq = drv[dev.ctrl_queue]
    ctrl(ctrlq, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, b"\0")
    ctrl(ctrlq, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, b"\0")
    many_multi = [bytes([1, 0, 0x5E, 0, 1, i]) for i in range(65)]
    table = mac_tables([], many_multi)
    assert ctrl(ctrlq, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, table) == VIRTIO_NET_OK
    assert dev.multi_overflow and not dev.uni_overflow
    other_mcast = bytes.fromhex("333300000001")
    other_uni = bytes.fromhex("525400999999")
    frames = [eth(other_mcast, b"m"), eth(other_uni, b"u")]
    assert received(dev, backend, drv[0], frames) == [frames[0]]


def test_control_message_over_the_size_limit_is_an_error_not_a_reset() -> None:
    dev = VirtioNet(FakeNetBackend(), mac=MAC, queue_size=64)
    drv, _, _ = attach_drivers(dev, bytearray_memory(8 << 20))
    ctrlq = drv[dev.ctrl_queue]
    head = bytes([VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET])
    ctrlq.add_chain([head, bytes(1 << 20)], [1])
    ctrlq.kick(force=True)
    [u] = ctrlq.get_used()
    assert u.written == bytes([VIRTIO_NET_ERR]) and not dev.broken

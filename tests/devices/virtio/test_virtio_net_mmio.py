"""virtio-net behind the virtio-mmio transport: identity, FEATURES_OK, I/O, snapshot/restore."""

from __future__ import annotations

import struct

from test_virtio_net import GUEST_MAC, MAC, PEER_MAC, FakeNetBackend, eth

from kvmlite.devices.virtio.mmio import VirtioMmioDevice, VirtioMmioState
from kvmlite.devices.virtio.net import VirtioNet, VirtioNetState
from kvmlite.devices.virtio.net_spec import (
    VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_TSO4,
    VNET_HDR_LEN,
)
from kvmlite.devices.virtio.spec import (
    VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_F_VERSION_1,
    VIRTIO_ID_NET,
    bit,
)
from kvmlite.memory import GuestMemory
from kvmlite.state import dumps, loads
from kvmlite.testing import MockDriver, RecordingInterrupt, bytearray_memory

QUEUE = 64
AREA = 256 * 1024


def rd(dev: VirtioMmioDevice, off: int) -> int:
    return struct.unpack("<I", dev.read(off, 4))[0]


def wr(dev: VirtioMmioDevice, off: int, value: int) -> None:
    dev.write(off, struct.pack("<I", value))


def negotiate(dev: VirtioMmioDevice, features: int | None) -> int:
    """Reset, ACKNOWLEDGE|DRIVER, features, FEATURES_OK; returns the status read back."""
    wr(dev, 0x070, 0)
    wr(dev, 0x070, 3)
    offered = 0
    for sel in (0, 1):
        wr(dev, 0x014, sel)
        offered |= rd(dev, 0x010) << (32 * sel)
    feats = offered if features is None else features
    for sel in (0, 1):
        wr(dev, 0x024, sel)
        wr(dev, 0x020, (feats >> (32 * sel)) & 0xFFFFFFFF)
    wr(dev, 0x070, 0x0B)
    return rd(dev, 0x070)


def bring_up(dev: VirtioMmioDevice, mem: GuestMemory) -> list[MockDriver]:
    """Linux's order: features, then rx/tx/ctrl queues, then DRIVER_OK."""
    status = negotiate(dev, None)
    assert status & VIRTIO_CONFIG_S_FEATURES_OK
    drivers = []
    for i in range(3):
        q = MockDriver(mem, QUEUE, base=i * AREA, data_size=AREA - 16 * 1024, event_idx=True)
        wr(dev, 0x030, i)
        wr(dev, 0x038, QUEUE)
        for off, addr in ((0x080, q.desc_table), (0x090, q.avail_ring), (0x0A0, q.used_ring)):
            wr(dev, off, addr & 0xFFFFFFFF)
            wr(dev, off + 4, addr >> 32)
        wr(dev, 0x044, 1)
        q.notify = lambda i=i: wr(dev, 0x050, i)
        drivers.append(q)
    wr(dev, 0x070, status | VIRTIO_CONFIG_S_DRIVER_OK)
    assert rd(dev, 0x070) & VIRTIO_CONFIG_S_DRIVER_OK
    return drivers


def test_identity_and_config_through_mmio() -> None:
    net = VirtioNet(FakeNetBackend(), mac=MAC, mtu=9000)
    dev = VirtioMmioDevice(net, bytearray_memory(1 << 20), RecordingInterrupt())
    assert rd(dev, 0x008) == VIRTIO_ID_NET
    cfg = b"".join(dev.read(0x100 + i, 1) for i in range(12))
    assert cfg == GUEST_MAC + struct.pack("<HHH", 1, 1, 9000)


def test_features_ok_refused_for_tso_without_guest_csum() -> None:
    net = VirtioNet(FakeNetBackend(vnet_hdr=True), mac=MAC)
    dev = VirtioMmioDevice(net, bytearray_memory(1 << 20), RecordingInterrupt())
    base = bit(VIRTIO_F_VERSION_1)
    assert not negotiate(dev, base | bit(VIRTIO_NET_F_GUEST_TSO4)) & VIRTIO_CONFIG_S_FEATURES_OK
    both = base | bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_CSUM)
    assert negotiate(dev, both) & VIRTIO_CONFIG_S_FEATURES_OK


def test_io_and_snapshot_restore_keep_pending_frames() -> None:
    mem = bytearray_memory(1 << 20)
    backend = FakeNetBackend()
    net = VirtioNet(backend, mac=MAC, queue_size=QUEUE)
    dev = VirtioMmioDevice(net, mem, RecordingInterrupt())
    rx, tx, _ = bring_up(dev, mem)
    tx.add_chain([bytes(VNET_HDR_LEN) + eth(PEER_MAC, b"out")])
    assert tx.kick()
    assert backend.sent == [eth(PEER_MAC, b"out")]
    frames = [eth(GUEST_MAC, f"in {i}".encode()) for i in range(3)]
    backend.inbox = list(frames)
    assert net.handle_rx(0) is False  # no receive buffers yet

    # Snapshot: device state and transport state, through the serialiser.
    net_state = loads(VirtioNetState, dumps(net.save()))
    mmio_state = loads(VirtioMmioState, dumps(dev.save()))

    # Restore into a fresh device and transport over the same guest memory.
    backend2 = FakeNetBackend()
    net2 = VirtioNet.restore({"backend": backend2, "mac": MAC, "queue_size": QUEUE}, net_state)
    ready: list[int] = []
    net2.rx_ready_handler = ready.append
    dev2 = VirtioMmioDevice.restore(
        {"device": net2, "memory": mem, "irq": RecordingInterrupt()}, mmio_state
    )
    assert net2.activated and list(net2.pending[0]) == frames
    rx.notify = lambda: wr(dev2, 0x050, 0)
    for _ in range(3):
        rx.add_chain([], [2048])
    assert rx.kick()
    assert ready == [0]
    assert [u.written[VNET_HDR_LEN : u.length] for u in rx.get_used()] == frames
    assert backend2.recv_calls == 0  # nothing was read from the new backend before that

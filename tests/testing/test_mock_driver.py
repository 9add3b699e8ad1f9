"""MockDriver: the ring layout it builds follows virtio 1.2 §2.7 byte for byte."""

from __future__ import annotations

import struct

import pytest

from kvmlite.devices.virtio.queue import VirtQueue
from kvmlite.devices.virtio.spec import VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE
from kvmlite.testing import MockDriver, RecordingInterrupt, attach_drivers, bytearray_memory


def test_layout_alignment_and_descriptors() -> None:
    mem = bytearray_memory(1 << 20, gpa=0x4000_0000)
    drv = MockDriver(mem, 8)
    assert drv.desc_table == 0x4000_0000
    assert drv.avail_ring == drv.desc_table + 16 * 8
    assert drv.used_ring % 4 == 0 and drv.used_ring >= drv.avail_ring + 6 + 2 * 8
    sub = drv.add_chain([b"abc"], [10])
    d0 = struct.unpack("<QIHH", mem.read(drv.desc_table + 16 * sub.descriptors[0], 16))
    d1 = struct.unpack("<QIHH", mem.read(drv.desc_table + 16 * sub.descriptors[1], 16))
    assert d0[1:] == (3, VIRTQ_DESC_F_NEXT, sub.descriptors[1])
    assert mem.read(d0[0], 3) == b"abc"
    assert d1[1:3] == (10, VIRTQ_DESC_F_WRITE)
    assert mem.read_int(drv.avail_ring + 2, 2) == 1
    assert mem.read_int(drv.avail_ring + 4, 2) == sub.head


def test_indirect_chain_layout() -> None:
    mem = bytearray_memory(1 << 20)
    drv = MockDriver(mem, 8)
    sub = drv.add_chain([b"x", b"y"], [4], indirect=True)
    assert len(sub.descriptors) == 1
    addr, length, flags, _ = struct.unpack("<QIHH", mem.read(drv.desc_table + 16 * sub.head, 16))
    assert flags == VIRTQ_DESC_F_INDIRECT and length == 48
    last = struct.unpack("<QIHH", mem.read(addr + 32, 16))
    assert last[1:3] == (4, VIRTQ_DESC_F_WRITE)


def test_descriptor_exhaustion_and_recycling() -> None:
    mem = bytearray_memory(1 << 20)
    drv = MockDriver(mem, 4)
    q = VirtQueue(4)
    drv.configure(q)
    for _ in range(2):
        drv.add_chain([b"a"], [1])
    with pytest.raises(ValueError, match="descriptors"):
        drv.add_chain([b"a"])
    while (chain := q.pop(mem)) is not None:
        q.add_used(mem, chain.head, 1)
    assert len(drv.get_used()) == 2
    drv.add_chain([b"a"], [1])  # descriptors came back


def test_rings_must_fit() -> None:
    with pytest.raises(ValueError, match="fit"):
        MockDriver(bytearray_memory(4096), 256)


def test_attach_drivers_wires_kicks() -> None:
    from kvmlite.devices.virtio.rng import VirtioRng

    dev = VirtioRng(entropy=lambda n: b"\x07" * n)
    drivers, irqs, config = attach_drivers(dev, bytearray_memory(1 << 20))
    assert dev.activated and isinstance(config, RecordingInterrupt)
    drivers[0].add_chain([], [3])
    drivers[0].kick()
    [u] = drivers[0].get_used()
    assert u.written == b"\x07\x07\x07" and irqs[0].count == 1

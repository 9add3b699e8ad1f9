"""The virtio-mmio v2 transport driven like Linux's virtio_mmio driver."""

from __future__ import annotations

import struct

from kvmlite.devices.virtio.mmio import (
    MMIO_SIZE,
    VIRTIO_MMIO_MAGIC,
    VirtioMmioDevice,
    VirtioMmioState,
    cmdline_fragment,
)
from kvmlite.devices.virtio.rng import VirtioRng, VirtioRngState
from kvmlite.devices.virtio.spec import (
    VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
)
from kvmlite.state import dumps, loads
from kvmlite.testing import MockDriver, RecordingInterrupt, bytearray_memory


def rd(dev: VirtioMmioDevice, off: int) -> int:
    return struct.unpack("<I", dev.read(off, 4))[0]


def wr(dev: VirtioMmioDevice, off: int, value: int) -> None:
    dev.write(off, struct.pack("<I", value))


def bring_up(dev: VirtioMmioDevice, q: MockDriver, features: int | None = None) -> int:
    wr(dev, 0x070, 0)
    wr(dev, 0x070, 3)
    feats = 0
    for sel in (0, 1):
        wr(dev, 0x014, sel)
        feats |= rd(dev, 0x010) << (32 * sel)
    if features is not None:
        feats = features
    for sel in (0, 1):
        wr(dev, 0x024, sel)
        wr(dev, 0x020, (feats >> (32 * sel)) & 0xFFFFFFFF)
    wr(dev, 0x070, 0x0B)
    status = rd(dev, 0x070)
    wr(dev, 0x030, 0)
    assert rd(dev, 0x034) == 64 and rd(dev, 0x044) == 0
    wr(dev, 0x038, q.size)
    for off, addr in ((0x080, q.desc_table), (0x090, q.avail_ring), (0x0A0, q.used_ring)):
        wr(dev, off, addr & 0xFFFFFFFF)
        wr(dev, off + 4, addr >> 32)
    wr(dev, 0x044, 1)
    wr(dev, 0x070, status | VIRTIO_CONFIG_S_DRIVER_OK)
    return rd(dev, 0x070)


def test_cmdline_fragment() -> None:
    assert cmdline_fragment(0xD000_0000, 0x1000, 5) == "virtio_mmio.device=4K@0xd0000000:5"
    assert cmdline_fragment(0xD000_0000, 0x200, 12) == "virtio_mmio.device=512@0xd0000000:12"


def test_identity_registers() -> None:
    dev = VirtioMmioDevice(VirtioRng(), bytearray_memory(1 << 20), RecordingInterrupt())
    assert rd(dev, 0) == VIRTIO_MMIO_MAGIC
    assert rd(dev, 4) == 2 and rd(dev, 8) == 4
    assert rd(dev, 0x0B0) == 0xFFFFFFFF  # no shared memory regions
    assert dev.read(0, 2) == b"\0\0"  # non-32-bit register access reads zero
    assert MMIO_SIZE == 0x1000


def test_queue_interrupt_and_ack() -> None:
    mem = bytearray_memory(1 << 20)
    irq = RecordingInterrupt()
    dev = VirtioMmioDevice(VirtioRng(), mem, irq)
    q = MockDriver(mem, 16)
    status = bring_up(dev, q)
    assert status & VIRTIO_CONFIG_S_FEATURES_OK and status & VIRTIO_CONFIG_S_DRIVER_OK
    q.add_chain([], [16])
    wr(dev, 0x050, 0)
    [u] = q.get_used()
    assert u.length == 16
    assert irq.level is True and rd(dev, 0x060) == 1
    wr(dev, 0x064, 1)
    assert irq.level is False and rd(dev, 0x060) == 0
    wr(dev, 0x050, 9)  # notify of a queue that does not exist: ignored


def test_bad_rings_need_reset_and_reset_clears() -> None:
    mem = bytearray_memory(1 << 20)
    irq = RecordingInterrupt()
    dev = VirtioMmioDevice(VirtioRng(), mem, irq)
    q = MockDriver(mem, 16)
    q.used_ring = 0x7FFF_0000
    status = bring_up(dev, q, features=1 << VIRTIO_F_VERSION_1)
    assert status & VIRTIO_CONFIG_S_NEEDS_RESET
    assert rd(dev, 0x060) == 2 and irq.level
    wr(dev, 0x070, 0)
    assert rd(dev, 0x070) == 0 and rd(dev, 0x060) == 0 and not irq.level


def test_config_space_reads() -> None:
    dev = VirtioMmioDevice(VirtioRng(), bytearray_memory(1 << 20), RecordingInterrupt())
    assert dev.read(0x100, 4) == bytes(4)  # rng has no config


def test_state_round_trip() -> None:
    mem = bytearray_memory(1 << 20)
    dev = VirtioMmioDevice(VirtioRng(), mem, RecordingInterrupt())
    q = MockDriver(mem, 16)
    bring_up(dev, q)
    q.add_chain([], [8])
    wr(dev, 0x050, 0)
    q.get_used()
    dstate = loads(VirtioRngState, dumps(dev.device.save()))
    tstate = loads(VirtioMmioState, dumps(dev.save()))
    irq2 = RecordingInterrupt()
    rng2 = VirtioRng.restore({}, dstate)
    dev2 = VirtioMmioDevice.restore({"device": rng2, "memory": mem, "irq": irq2}, tstate)
    assert irq2.level is True  # the unacknowledged interrupt is still pending
    assert dev2.save() == tstate
    q.add_chain([], [8])
    wr(dev2, 0x050, 0)
    assert [u.length for u in q.get_used()] == [8]


def test_each_interrupt_is_a_new_edge() -> None:
    mem = bytearray_memory(1 << 20)
    irq = RecordingInterrupt()
    dev = VirtioMmioDevice(VirtioRng(), mem, irq)
    q = MockDriver(mem, 16)
    bring_up(dev, q, features=1 << VIRTIO_F_VERSION_1)
    for _ in range(2):  # second completion arrives before the driver acknowledges
        q.add_chain([], [4])
        wr(dev, 0x050, 0)
    assert irq.count == 2 and irq.levels[-3:] == [True, False, True]

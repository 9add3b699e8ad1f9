"""The modern virtio-pci transport, driven like Linux's virtio_pci_modern driver would."""

from __future__ import annotations

import struct

import pytest
from virtio_fakes import MemBlockBackend

from kvmlite.devices.pci import PciRoot
from kvmlite.devices.pci.config import PCI_COMMAND, PCI_COMMAND_MEMORY
from kvmlite.devices.virtio.blk import VIRTIO_BLK_T_IN, VirtioBlock
from kvmlite.devices.virtio.pci import (
    BAR_SIZE,
    VIRTIO_MSI_NO_VECTOR,
    VIRTIO_PCI_CAP_COMMON_CFG,
    VIRTIO_PCI_CAP_DEVICE_CFG,
    VIRTIO_PCI_CAP_ISR_CFG,
    VIRTIO_PCI_CAP_NOTIFY_CFG,
    VIRTIO_PCI_CAP_PCI_CFG,
    VirtioPciDevice,
    VirtioPciState,
)
from kvmlite.devices.virtio.rng import VirtioRng, VirtioRngState
from kvmlite.devices.virtio.spec import (
    VIRTIO_CONFIG_S_ACKNOWLEDGE,
    VIRTIO_CONFIG_S_DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
)
from kvmlite.memory import GuestMemory
from kvmlite.state import dumps, loads
from kvmlite.testing import MockDriver, RecordingInterrupt, bytearray_memory

MMIO32 = (0xC000_0000, 0x1000_0000)


class LinuxLikeDriver:
    """Finds the virtio capabilities and programs the common config like Linux."""

    def __init__(self, dev: VirtioPciDevice) -> None:
        self.dev = dev
        self.caps: dict[int, tuple[int, int, int, int]] = {}
        for off, cap_id in dev.config.capabilities():
            if cap_id == 0x09:
                _, cfg_type, bar, _, offset, length = struct.unpack(
                    "<BBBB2xII", bytes(dev.config.data[off + 2 : off + 16])
                )
                self.caps[cfg_type] = (bar, offset, length, off)
        bar, off, _, cap = self.caps[VIRTIO_PCI_CAP_NOTIFY_CFG]
        self.notify_base = off
        self.notify_mult = dev.config.get(cap + 16, 4)

    def _common(self) -> int:
        return self.caps[VIRTIO_PCI_CAP_COMMON_CFG][1]

    def rd(self, off: int, size: int) -> int:
        return int.from_bytes(self.dev.read_bar(0, self._common() + off, size), "little")

    def wr(self, off: int, size: int, value: int) -> None:
        self.dev.write_bar(0, self._common() + off, value.to_bytes(size, "little"))

    def features(self) -> int:
        self.wr(0, 4, 0)
        lo = self.rd(4, 4)
        self.wr(0, 4, 1)
        return lo | self.rd(4, 4) << 32

    def negotiate(self, features: int) -> int:
        self.wr(20, 1, 0)
        self.wr(20, 1, VIRTIO_CONFIG_S_ACKNOWLEDGE)
        self.wr(20, 1, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER)
        for sel in (0, 1):
            self.wr(8, 4, sel)
            self.wr(12, 4, (features >> (32 * sel)) & 0xFFFFFFFF)
        self.wr(20, 1, 0x0B)
        return self.rd(20, 1)

    def setup_queue(self, index: int, drv: MockDriver, vector: int) -> int:
        self.wr(22, 2, index)
        self.wr(24, 2, drv.size)
        self.wr(26, 2, vector)
        for off, addr in ((32, drv.desc_table), (40, drv.avail_ring), (48, drv.used_ring)):
            self.wr(off, 4, addr & 0xFFFFFFFF)  # two 32-bit halves, like vp_iowrite64_twopart
            self.wr(off + 4, 4, addr >> 32)
        self.wr(28, 2, 1)
        return self.rd(30, 2)

    def kick(self, queue_notify_off: int, index: int) -> None:
        addr = self.notify_base + queue_notify_off * self.notify_mult
        self.dev.write_bar(0, addr, struct.pack("<H", index))


def make_rng(mem: GuestMemory) -> tuple[VirtioPciDevice, PciRoot, list]:
    sent: list[tuple[int, int]] = []
    dev = VirtioPciDevice(VirtioRng(), mem, signal_msi=lambda a, d: sent.append((a, d)))
    root = PciRoot()
    root.add_device(dev)
    root.allocate_bars(MMIO32, (1 << 32, 1 << 32))
    return dev, root, sent


def enable_msix(dev: VirtioPciDevice, vectors: list[tuple[int, int]]) -> None:
    for v, data in vectors:
        for i, word in enumerate((0xFEE00000, 0, data, 0)):  # dword accesses, as the spec asks
            dev.write_bar(0, 0x4000 + 16 * v + 4 * i, struct.pack("<I", word))
    cap = dev.msix.cap_offset
    assert cap is not None
    dev.write_config(cap + 2, struct.pack("<H", 0x8000))


def test_identity_capabilities_and_bar() -> None:
    mem = bytearray_memory(1 << 20)
    dev, root, _ = make_rng(mem)
    assert dev.read_config(0, 4) == 0x1044_1AF4
    assert dev.read_config(8, 1) == 1  # revision 1: modern only
    drv = LinuxLikeDriver(dev)
    assert set(drv.caps) == {
        VIRTIO_PCI_CAP_COMMON_CFG,
        VIRTIO_PCI_CAP_NOTIFY_CFG,
        VIRTIO_PCI_CAP_ISR_CFG,
        VIRTIO_PCI_CAP_DEVICE_CFG,
        VIRTIO_PCI_CAP_PCI_CFG,
    }
    for bar, offset, length, _ in drv.caps.values():
        assert bar == 0 and offset + length <= BAR_SIZE
    [bar] = dev.bars()
    assert bar.address == 1 << 32 and bar.size == BAR_SIZE
    assert dev.notify_addresses() == [(0x3000, 0)]
    assert drv.features() >> VIRTIO_F_VERSION_1 & 1
    assert drv.rd(18, 2) == 1  # num_queues


def test_full_driver_flow_with_msix() -> None:
    mem = bytearray_memory(1 << 20)
    dev, root, sent = make_rng(mem)
    drv = LinuxLikeDriver(dev)
    status = drv.negotiate(drv.features())
    assert status & VIRTIO_CONFIG_S_FEATURES_OK
    enable_msix(dev, [(0, 0x40), (1, 0x41)])
    drv.wr(16, 2, 0)  # config vector 0
    q = MockDriver(mem, 16, event_idx=True)
    noff = drv.setup_queue(0, q, 1)
    assert drv.rd(26, 2) == 1
    drv.wr(20, 1, status | VIRTIO_CONFIG_S_DRIVER_OK)
    q.add_chain([], [32])
    drv.kick(noff, 0)
    [u] = q.get_used()
    assert u.length == 32
    assert sent == [(0xFEE00000, 0x41)]
    drv.wr(26, 2, 7)  # queue config is frozen after DRIVER_OK
    assert drv.rd(26, 2) == 1


def test_intx_fallback_and_isr_read_clears() -> None:
    mem = bytearray_memory(1 << 20)
    dev, root, sent = make_rng(mem)
    lines: dict[int, RecordingInterrupt] = {}
    root.connect_intx(lambda gsi: lines.setdefault(gsi, RecordingInterrupt()))
    drv = LinuxLikeDriver(dev)
    status = drv.negotiate(1 << VIRTIO_F_VERSION_1)
    q = MockDriver(mem, 16)
    noff = drv.setup_queue(0, q, VIRTIO_MSI_NO_VECTOR)
    drv.wr(20, 1, status | VIRTIO_CONFIG_S_DRIVER_OK)
    q.add_chain([], [8])
    drv.kick(noff, 0)
    line = lines[root.intx_gsi(1, 1)]
    assert line.level is True and sent == []
    isr_off = drv.caps[VIRTIO_PCI_CAP_ISR_CFG][1]
    assert dev.read_bar(0, isr_off, 1) == b"\x01"
    assert line.level is False
    assert dev.read_bar(0, isr_off, 1) == b"\x00"


def test_feature_refusal_needs_reset_and_reset() -> None:
    mem = bytearray_memory(1 << 20)
    dev, _, _ = make_rng(mem)
    drv = LinuxLikeDriver(dev)
    # A driver that does not accept VERSION_1 is refused FEATURES_OK.
    assert not drv.negotiate(0) & VIRTIO_CONFIG_S_FEATURES_OK
    status = drv.negotiate(1 << VIRTIO_F_VERSION_1)
    q = MockDriver(mem, 16)
    drv.setup_queue(0, q, VIRTIO_MSI_NO_VECTOR)
    drv.wr(22, 2, 0)
    drv.wr(48, 4, 0xFFFF0000)  # used ring outside RAM
    drv.wr(20, 1, status | VIRTIO_CONFIG_S_DRIVER_OK)
    assert drv.rd(20, 1) & VIRTIO_CONFIG_S_NEEDS_RESET
    assert dev.isr == 2  # config change interrupt
    drv.wr(20, 1, 0)
    assert drv.rd(20, 1) == 0 and drv.rd(24, 2) == 64 and drv.rd(28, 2) == 0
    drv.wr(22, 2, 5)  # a queue that does not exist
    assert drv.rd(24, 2) == 0


def test_pci_cfg_access_window() -> None:
    mem = bytearray_memory(1 << 20)
    dev, _, _ = make_rng(mem)
    cap = dev.pci_cfg_cap
    dev.write_config(cap + 4, b"\x00")  # bar 0
    dev.write_config(cap + 8, struct.pack("<I", 18))  # common cfg num_queues
    dev.write_config(cap + 12, struct.pack("<I", 2))
    assert dev.read_config(cap + 16, 4) & 0xFFFF == 1
    dev.write_config(cap + 8, struct.pack("<I", 22))  # queue_select, written through the window
    dev.write_config(cap + 16, struct.pack("<I", 3))
    assert dev.core.queue_select == 3


def test_device_config_and_bar_move_hook() -> None:
    mem = bytearray_memory(1 << 20)
    dev = VirtioPciDevice(VirtioBlock(MemBlockBackend(1 << 20)), mem)
    root = PciRoot()
    root.add_device(dev)
    root.allocate_bars(MMIO32)
    assert dev.bars()[0].address == MMIO32[0]
    assert dev.read_bar(0, 0x2000, 8) == struct.pack("<Q", 2048)  # capacity
    moves = []
    dev.on_bar_change = lambda d, i, old, new: moves.append((i, old, new))
    dev.write_config(PCI_COMMAND, b"\x00\x00")
    dev.write_config(0x10, struct.pack("<I", 0xE000_0000))
    dev.write_config(PCI_COMMAND, struct.pack("<H", PCI_COMMAND_MEMORY))
    assert moves == [(0, MMIO32[0], None), (0, None, 0xE000_0000)]


def test_state_round_trip_reactivates_device() -> None:
    mem = bytearray_memory(1 << 20)
    dev, root, sent = make_rng(mem)
    drv = LinuxLikeDriver(dev)
    status = drv.negotiate(drv.features())
    enable_msix(dev, [(0, 0x40), (1, 0x41)])
    q = MockDriver(mem, 16, event_idx=True)
    noff = drv.setup_queue(0, q, 1)
    drv.wr(20, 1, status | VIRTIO_CONFIG_S_DRIVER_OK)
    q.add_chain([], [4])
    drv.kick(noff, 0)
    assert len(q.get_used()) == 1
    dstate = loads(VirtioRngState, dumps(dev.device.save()))
    tstate = loads(VirtioPciState, dumps(dev.save()))
    sent2: list = []
    rng2 = VirtioRng.restore({}, dstate)
    dev2 = VirtioPciDevice(rng2, mem, signal_msi=lambda a, d: sent2.append((a, d)))
    PciRoot().add_device(dev2)  # BARs are placed by the bus, then the state applies
    dev2.load_state(tstate)
    assert dev2.device.activated and dev2.config.data == dev.config.data
    q.add_chain([], [4])
    dev2.notify(0)
    assert [u.length for u in q.get_used()] == [4]
    assert sent2 == [(0xFEE00000, 0x41)]


def test_blk_over_pci_read() -> None:
    mem = bytearray_memory(1 << 20)
    backend = MemBlockBackend(1 << 20)
    backend.data[512:1024] = b"Z" * 512
    dev = VirtioPciDevice(VirtioBlock(backend, queue_size=32), mem)
    root = PciRoot()
    root.add_device(dev)
    root.allocate_bars(MMIO32)
    drv = LinuxLikeDriver(dev)
    status = drv.negotiate(drv.features())
    q = MockDriver(mem, 32)
    noff = drv.setup_queue(0, q, VIRTIO_MSI_NO_VECTOR)
    drv.wr(20, 1, status | VIRTIO_CONFIG_S_DRIVER_OK)
    q.add_chain([struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 1)], [512, 1])
    drv.kick(noff, 0)
    [u] = q.get_used()
    assert u.written == b"Z" * 512 + b"\x00"


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_odd_accesses_do_not_raise(size: int) -> None:
    mem = bytearray_memory(1 << 20)
    dev, _, _ = make_rng(mem)
    for off in range(0, BAR_SIZE, 0x3FD):
        dev.read_bar(0, off, size)
        dev.write_bar(0, off, b"\xff" * size)
    dev.read_bar(0, 0, 3)
    dev.write_bar(1, 0, b"\x00")

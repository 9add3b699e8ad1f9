"""PCI config space, BAR sizing and placement, host bridge access paths, INTx routing."""

from __future__ import annotations

import struct

import pytest

from kvmlite.devices.pci import (
    BarKind,
    PciConfigSpace,
    PciDevice,
    PciDeviceState,
    PciRoot,
)
from kvmlite.devices.pci.config import (
    PCI_COMMAND,
    PCI_COMMAND_INTX_DISABLE,
    PCI_COMMAND_MEMORY,
    PCI_STATUS,
    PCI_STATUS_CAP_LIST,
    PCI_STATUS_INTERRUPT,
)
from kvmlite.errors import ConfigError, StateError
from kvmlite.state import dumps, loads
from kvmlite.testing import RecordingInterrupt


def make_device(pin: int = 1) -> PciDevice:
    cfg = PciConfigSpace(vendor_id=0x1234, device_id=0x5678, class_code=0xFF0000, interrupt_pin=pin)
    cfg.add_bar(0, 0x4000, BarKind.MEM64)
    cfg.add_bar(2, 0x1000, BarKind.MEM32)
    cfg.add_bar(3, 0x20, BarKind.IO)
    return PciDevice(cfg)


def conf1_address(slot: int, reg: int, bus: int = 0) -> bytes:
    return struct.pack("<I", 0x80000000 | bus << 16 | slot << 11 | reg)


def test_read_only_ids_and_masks() -> None:
    d = make_device()
    d.write_config(0, b"\xff\xff\xff\xff")
    assert d.read_config(0, 4) == 0x56781234
    d.write_config(PCI_COMMAND, b"\xff\xff")
    assert d.read_config(PCI_COMMAND, 2) == 0x0547
    # RW1C: error bits set by the device are cleared by writing 1, other bits untouched.
    d.config.set(PCI_STATUS, 2, 0x8000 | 0x2000 | PCI_STATUS_CAP_LIST)
    d.write_config(PCI_STATUS, struct.pack("<H", 0x8000 | PCI_STATUS_CAP_LIST))
    assert d.read_config(PCI_STATUS, 2) == 0x2000 | PCI_STATUS_CAP_LIST
    assert d.read_config(0x3D, 1) == 1
    assert d.read_config(4096, 4) == 0xFFFFFFFF


def test_bar_sizing_protocol() -> None:
    d = make_device()
    d.write_config(0x10, b"\xff\xff\xff\xff")
    d.write_config(0x14, b"\xff\xff\xff\xff")
    assert d.read_config(0x10, 4) == 0xFFFFC004  # 16 KiB, 64-bit, non-prefetchable
    assert d.read_config(0x14, 4) == 0xFFFFFFFF
    d.write_config(0x18, b"\xff\xff\xff\xff")
    assert d.read_config(0x18, 4) == 0xFFFFF000
    d.write_config(0x1C, b"\xff\xff\xff\xff")
    assert d.read_config(0x1C, 4) == 0xFFFFFFE1  # 32 ports, I/O space bit
    assert d.read_config(0x20, 4) == 0  # no BAR 4: reads zero, ignores writes
    d.write_config(0x20, b"\xff\xff\xff\xff")
    assert d.read_config(0x20, 4) == 0
    with pytest.raises(ValueError):
        d.config.add_bar(1, 0x1000, BarKind.MEM32)  # upper half of BAR 0
    with pytest.raises(ValueError):
        d.config.add_bar(4, 0x1001, BarKind.MEM32)


def test_capability_list_linking() -> None:
    cfg = PciConfigSpace(vendor_id=1, device_id=2, class_code=0)
    a = cfg.add_capability(0x09, b"\x04\x01")
    b = cfg.add_capability(0x11, bytes(10), wmask=b"\xff" + bytes(9))
    assert cfg.capabilities() == [(a, 0x09), (b, 0x11)]
    assert a == 0x40 and b % 4 == 0
    assert cfg.get(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST
    cfg.write(b + 2, b"\xaa\xbb")
    assert cfg.get(b + 2, 2) == 0xAA  # second byte is read-only
    with pytest.raises(ValueError):
        cfg.add_capability(0x09, bytes(250))


def test_root_allocates_bars_and_reports_moves() -> None:
    root = PciRoot()
    d = make_device()
    slot = root.add_device(d)
    assert slot == 1
    moves: list[tuple[int, int | None, int | None]] = []
    d.on_bar_change = lambda dev, i, old, new: moves.append((i, old, new))
    root.allocate_bars((0xC000_0000, 0x1000_0000), (0x1_0000_0000, 1 << 30), (0xC000, 0x1000))
    bars = {b.index: b.address for b in d.bars()}
    assert bars == {0: 0x1_0000_0000, 2: 0xC000_0000, 3: 0xC000}
    assert {m[0] for m in moves} == {0, 2, 3} and all(m[1] is None for m in moves)
    moves.clear()
    # Linux sizing a BAR: decode off, write ~0, restore, decode on.
    cmd = d.read_config(PCI_COMMAND, 2)
    d.write_config(PCI_COMMAND, struct.pack("<H", cmd & ~PCI_COMMAND_MEMORY))
    assert (0, 0x1_0000_0000, None) in moves and (2, 0xC000_0000, None) in moves
    d.write_config(0x18, b"\xff\xff\xff\xff")
    d.write_config(0x18, struct.pack("<I", 0xD000_0000))
    moves.clear()
    d.write_config(PCI_COMMAND, struct.pack("<H", cmd))
    assert sorted(moves) == [(0, None, 0x1_0000_0000), (2, None, 0xD000_0000)]
    # Sizing with decoding on: the BAR is unmapped meanwhile, not moved to 0xfffff000.
    moves.clear()
    d.write_config(0x18, b"\xff\xff\xff\xff")
    d.write_config(0x18, struct.pack("<I", 0xD000_0000))
    assert moves == [(2, 0xD000_0000, None), (2, None, 0xD000_0000)]


def test_allocate_bars_errors() -> None:
    root = PciRoot()
    root.add_device(make_device())
    with pytest.raises(ConfigError, match="I/O"):
        root.allocate_bars((0xC000_0000, 0x100000))
    root = PciRoot()
    root.add_device(make_device())
    with pytest.raises(ConfigError, match="too small"):
        root.allocate_bars((0xC000_0000, 0x2000), io=(0xC000, 0x100))
    with pytest.raises(ConfigError, match="already"):
        root.add_device(make_device(), slot=1)


def test_config_mechanism_1_and_ecam() -> None:
    root = PciRoot()
    d = make_device()
    root.add_device(d, slot=3)
    io = root.config_io
    io.write(0, conf1_address(0, 0))
    assert io.read(4, 4) == struct.pack("<HH", 0x8086, 0x0D57)
    assert io.read(0, 4) == conf1_address(0, 0)
    io.write(0, conf1_address(3, 0))
    assert io.read(6, 2) == struct.pack("<H", 0x5678)  # word at 0xCFE
    io.write(0, conf1_address(3, 0x08))
    assert io.read(7, 1) == b"\xff"  # class code byte at 0xCFF
    io.write(0, conf1_address(4, 0))
    assert io.read(4, 4) == b"\xff\xff\xff\xff"  # empty slot
    io.write(0, conf1_address(3, 0, bus=1))
    assert io.read(4, 4) == b"\xff\xff\xff\xff"  # no bus 1
    io.write(0, b"\x00\x00\x00\x00")  # enable bit clear
    assert io.read(4, 4) == b"\xff\xff\xff\xff"
    io.write(0, conf1_address(3, 0x3C))
    io.write(4, b"\x0b")
    assert d.read_config(0x3C, 1) == 0x0B
    ecam = root.ecam
    assert ecam.read(3 << 15, 4) == struct.pack("<HH", 0x1234, 0x5678)
    ecam.write((3 << 15) | 0x3C, b"\x05")
    assert d.read_config(0x3C, 1) == 5
    assert ecam.read((3 << 15) | 0x800, 4) == bytes(4)  # extended space present, empty
    assert ecam.read(5 << 15, 2) == b"\xff\xff"
    resets = []
    root.reset_handler = lambda: resets.append(1)
    io.write(1, b"\x06")
    assert resets == [1]


def test_intx_swizzle_sharing_and_disable() -> None:
    root = PciRoot()
    devs = [make_device(pin=1) for _ in range(5)]
    for d in devs:
        root.add_device(d)
    routes = root.interrupt_routes()
    assert [(r.slot, r.pin, r.gsi) for r in routes] == [
        (1, 1, 17),
        (2, 1, 18),
        (3, 1, 19),
        (4, 1, 16),
        (5, 1, 17),
    ]
    lines: dict[int, RecordingInterrupt] = {}
    root.connect_intx(lambda gsi: lines.setdefault(gsi, RecordingInterrupt()))
    devs[0].set_intx(True)
    devs[4].set_intx(True)  # same GSI 17
    devs[0].set_intx(False)
    assert lines[17].level is True  # still held by slot 5
    devs[4].set_intx(False)
    assert lines[17].level is False
    assert devs[0].read_config(0x3C, 1) == 17
    devs[1].write_config(PCI_COMMAND, struct.pack("<H", PCI_COMMAND_INTX_DISABLE))
    devs[1].set_intx(True)
    assert lines[18].level is False
    assert devs[1].read_config(PCI_STATUS, 2) & PCI_STATUS_INTERRUPT
    devs[1].write_config(PCI_COMMAND, b"\x00\x00")
    assert lines[18].level is True


def test_pci_state_round_trip() -> None:
    root = PciRoot()
    d = make_device()
    root.add_device(d)
    root.allocate_bars((0xC000_0000, 0x1000_0000), None, (0xC000, 0x100))
    d.write_config(0x18, struct.pack("<I", 0xD000_0000))
    state = loads(PciDeviceState, dumps(d.save_pci()))
    d2 = make_device()
    moves = []
    d2.on_bar_change = lambda dev, i, old, new: moves.append((i, new))
    d2.restore_pci(state)
    assert d2.config.data == d.config.data
    assert (2, 0xD000_0000) in moves
    other = PciDevice(PciConfigSpace(vendor_id=1, device_id=1, class_code=0))
    with pytest.raises(StateError):
        other.restore_pci(state)
    bridge_state = root.host_bridge.save()
    root.host_bridge.load_state(loads(PciDeviceState, dumps(bridge_state)))


def test_a_failing_bar_hook_does_not_raise_into_the_guest_access() -> None:
    root = PciRoot()
    d = make_device()
    root.add_device(d)
    root.allocate_bars((0xC000_0000, 0x1000_0000), None, (0xC000, 0x100))

    def refuse(dev: PciDevice, i: int, old: int | None, new: int | None) -> None:
        raise ConfigError("overlap")

    d.on_bar_change = refuse
    d.write_config(0x18, struct.pack("<I", 0xD000_0000))  # logged, not raised
    assert d.bars()[1].address == 0xD000_0000

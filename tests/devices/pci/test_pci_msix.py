"""MSI-X: table/PBA access, per-vector and function masking, pending delivery, state."""

from __future__ import annotations

import struct

from kvmlite.devices.pci import BarKind, MsixState, MsixTable, PciConfigSpace, PciDevice
from kvmlite.state import dumps, loads
from kvmlite.testing import RecordingInterrupt


def setup(n: int = 4) -> tuple[PciDevice, MsixTable, list, list]:
    sent: list[tuple[int, int]] = []
    changes: list[tuple[int, int, int, bool]] = []
    msix = MsixTable(
        n,
        signal_msi=lambda a, d: sent.append((a, d)),
        on_vector_change=lambda *c: changes.append(c),
    )
    cfg = PciConfigSpace(vendor_id=1, device_id=2, class_code=0)
    cfg.add_bar(0, 0x2000, BarKind.MEM64)
    msix.add_capability(cfg, 0, 0x0, 0, 0x1000)
    return PciDevice(cfg, msix), msix, sent, changes


def program(msix: MsixTable, v: int, addr: int, data: int, masked: bool) -> None:
    msix.write_table(16 * v, struct.pack("<I", addr & 0xFFFFFFFF))
    msix.write_table(16 * v + 4, struct.pack("<I", addr >> 32))
    msix.write_table(16 * v + 8, struct.pack("<I", data))
    msix.write_table(16 * v + 12, struct.pack("<I", int(masked)))


def enable(dev: PciDevice, on: bool = True, fmask: bool = False) -> None:
    cap = dev.msix.cap_offset  # type: ignore[union-attr]
    ctrl = (0x8000 if on else 0) | (0x4000 if fmask else 0)
    dev.write_config(cap + 2, struct.pack("<H", ctrl))


def test_capability_fields() -> None:
    dev, msix, _, _ = setup(4)
    cap = msix.cap_offset
    assert cap is not None and dev.config.capabilities() == [(cap, 0x11)]
    ctrl, table, pba = struct.unpack("<HII", bytes(dev.config.data[cap + 2 : cap + 12]))
    assert (ctrl, table, pba) == (3, 0x0, 0x1000)
    dev.write_config(cap + 2, b"\xff\xff")
    assert dev.read_config(cap + 2, 2) == 0xC003  # table size is read-only
    assert msix.enabled and msix.function_masked


def test_notify_disabled_masked_pending() -> None:
    dev, msix, sent, changes = setup()
    assert msix.notify(0) is False  # MSI-X off: caller uses INTx
    enable(dev)
    program(msix, 1, 0xFEE0_0000, 0x41, masked=True)
    assert changes[-1] == (1, 0xFEE0_0000, 0x41, True)
    assert msix.notify(1) is True and sent == []
    assert msix.read_pba(0, 8) == struct.pack("<Q", 0b10)
    msix.write_table(16 + 12, struct.pack("<I", 0))  # unmask: pending message goes out
    assert sent == [(0xFEE0_0000, 0x41)]
    assert msix.read_pba(0, 8) == bytes(8)
    assert changes[-1] == (1, 0xFEE0_0000, 0x41, False)
    msix.notify(1)
    assert len(sent) == 2
    assert msix.notify(99) is True  # out of range vector: dropped, not an error


def test_function_mask_and_attached_interrupt() -> None:
    dev, msix, sent, _ = setup()
    irq = RecordingInterrupt()
    msix.set_vector_interrupt(2, irq)
    program(msix, 2, 0xFEE0_1000, 0x22, masked=False)
    enable(dev, fmask=True)
    msix.notify(2)
    assert irq.count == 0 and msix.pending[2]
    enable(dev, fmask=False)
    assert irq.count == 1 and not msix.pending[2] and sent == []


def test_table_read_back_and_bad_offsets() -> None:
    _, msix, _, _ = setup()
    program(msix, 3, 0x1_2345_6789, 7, masked=True)
    assert msix.read_table(48, 16) == struct.pack("<IIII", 0x23456789, 1, 7, 1)
    assert msix.read_table(48 + 4, 8) == struct.pack("<II", 1, 7)
    msix.write_table(48 + 12, struct.pack("<I", 0xFFFFFFFF))
    assert msix.read_table(48 + 12, 4) == struct.pack("<I", 1)  # reserved bits stay 0
    msix.write_table(4096, b"\xff" * 4)  # outside: ignored
    assert msix.read_table(4096, 4) == bytes(4)
    assert msix.read_pba(64, 4) == bytes(4)


def test_state_round_trip() -> None:
    dev, msix, _, _ = setup()
    enable(dev)
    program(msix, 0, 0xFEE0_0000, 0x30, masked=True)
    msix.notify(0)
    state = loads(MsixState, dumps(msix.save()))
    changes: list = []
    m2 = MsixTable(4, on_vector_change=lambda *c: changes.append(c))
    m2.load_state(state)
    assert m2.save() == msix.save()
    assert len(changes) == 4 and changes[0] == (0, 0xFEE0_0000, 0x30, True)

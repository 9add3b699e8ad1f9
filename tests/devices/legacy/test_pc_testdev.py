"""pc-testdev and isa-debug-exit against the register map of QEMU's hw/misc/pc-testdev.c."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite import state
from kvmlite.bus import Bus
from kvmlite.devices.legacy.isa_debug_exit import IsaDebugExit, isa_debug_exit_status
from kvmlite.devices.legacy.pc_testdev import (
    PC_TESTDEV_IOMEM_SIZE,
    PC_TESTDEV_IRQ_LINES,
    PcTestdev,
    PcTestdevState,
)


class Line:
    def __init__(self):
        self.calls = []

    def set_level(self, level):
        self.calls.append(level)


def make():
    lines = [Line() for _ in range(PC_TESTDEV_IRQ_LINES)]
    flushed = []
    return PcTestdev(lines, flushed.append), lines, flushed


@pytest.mark.parametrize("value,status", [(0, 1), (1, 3), (3, 7), (0x7F, 0xFF), (0x80, 1)])
def test_isa_debug_exit_status(value, status):
    # QEMU: exit((v << 1) | 1); a process keeps the low 8 bits.
    assert isa_debug_exit_status(value) == status
    got = []
    dev = IsaDebugExit(got.append)
    dev.write(0, value.to_bytes(4, "little"))
    assert got == [status]


def test_isa_debug_exit_any_offset_and_size():
    got = []
    dev = IsaDebugExit(got.append)
    dev.write(2, b"\x01")
    dev.write(0, b"\x02\x00")
    dev.write(0, b"\x01\x02\x03")  # not an x86 port access size
    assert got == [3, 5] and dev.read(0, 2) == b"\xff\xff"


def test_scratch_register_sizes_and_offsets():
    dev, _, _ = make()
    dev.ioport.write(0, (0x12345678).to_bytes(4, "little"))
    assert dev.ioport.read(0, 4) == bytes.fromhex("78563412")
    assert dev.ioport.read(1, 2) == bytes.fromhex("5634")
    dev.ioport.write(2, b"\xaa")
    assert dev.ioport_data == 0x12AA5678
    dev.ioport.write(0, b"\x01\x02")
    assert dev.ioport_data == 0x12AA0201
    # 0xE8 is the same register, byte-wise
    assert dev.ioport_byte.read(0, 4) == dev.ioport.read(0, 4)
    dev.ioport_byte.write(3, b"\x77")
    assert dev.ioport.read(3, 1) == b"\x77"
    # an access running past the register touches only the bytes inside it
    dev.ioport.write(3, b"\x01\x02\x03\x04")
    assert dev.ioport_data >> 24 == 1 and dev.ioport.read(3, 4) == b"\x01\0\0\0"


def test_irq_lines_every_write_reaches_the_line():
    dev, lines, _ = make()
    dev.irq.write(14, b"\x01")
    dev.irq.write(14, b"\x05")  # still 1: re-asserted all the same
    dev.irq.write(14, b"\x00")
    dev.irq.write(23, b"\x01")
    dev.irq.write(2, b"\x01\x00")  # 2-byte access: dropped as in QEMU
    assert lines[14].calls == [True, True, False] and lines[23].calls == [True]
    assert lines[2].calls == []
    assert dev.irq.read(0, 1) == b"\0"


def test_flush_page_callback():
    dev, _, flushed = make()
    dev.flush.write(0, (0x123456).to_bytes(4, "little"))
    dev.flush.write(0, b"\x01")  # QEMU wants 4-byte writes
    assert flushed == [0x123000]
    PcTestdev().flush.write(0, bytes(4))  # no callback: nothing happens


def test_iomem_is_memory():
    dev, _, _ = make()
    dev.iomem_region.write(0x10, bytes(range(8)))
    assert dev.iomem_region.read(0x10, 8) == bytes(range(8))
    assert dev.iomem_region.read(0x12, 2) == b"\x02\x03"
    dev.iomem_region.write(PC_TESTDEV_IOMEM_SIZE - 2, b"abcd")
    assert dev.iomem_region.read(PC_TESTDEV_IOMEM_SIZE - 2, 4) == b"ab\0\0"


def test_on_a_bus():
    dev, lines, _ = make()
    pio, mmio = Bus(), Bus()
    pio.insert(dev.ioport, 0xE0, 4)
    pio.insert(dev.irq, 0x2000, 24)
    mmio.insert(dev.iomem_region, 0xFF000000, PC_TESTDEV_IOMEM_SIZE)
    pio.write(0xE0, b"\x11\x22")
    assert pio.read(0xE1, 1) == b"\x22"
    pio.write(0x2000 + 9, b"\x01")
    assert lines[9].calls == [True]
    mmio.write(0xFF00FFF0, b"xy")
    assert mmio.read(0xFF00FFF0, 2) == b"xy"


def test_save_restore_round_trip():
    dev, _, _ = make()
    dev.ioport.write(0, b"\x01\x02\x03\x04")
    dev.irq.write(5, b"\x01")
    dev.iomem_region.write(100, b"hello")
    saved = dev.save()
    other, lines, _ = make()
    other.restore(state.loads(PcTestdevState, state.dumps(saved)))
    assert other.save() == saved
    assert lines[5].calls == [True] and other.iomem_region.read(100, 5) == b"hello"


def test_wrong_number_of_lines():
    with pytest.raises(ValueError):
        PcTestdev([Line()])


@given(
    st.lists(st.tuples(st.sampled_from("sbfim"), st.integers(0, 0x10010), st.binary(max_size=8)))
)
def test_fuzz_guest_accesses(ops):
    dev, _, _ = make()
    regions = {
        "s": dev.ioport,
        "b": dev.ioport_byte,
        "f": dev.flush,
        "i": dev.irq,
        "m": dev.iomem_region,
    }
    for region, offset, data in ops:
        r = regions[region]
        r.write(offset, data)
        assert len(r.read(offset, len(data) or 1)) == (len(data) or 1)
    assert len(dev.iomem) == PC_TESTDEV_IOMEM_SIZE and 0 <= dev.ioport_data < 1 << 32

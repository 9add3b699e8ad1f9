import pytest

from kvmlite.arch.x86 import layout
from kvmlite.arch.x86.layout import E820_RAM, E820_RESERVED, e820_map
from kvmlite.errors import ConfigError
from kvmlite.memory import FOUR_GIB, MIB, GuestMemory, Region


def test_boot_data_does_not_overlap():
    areas = [
        (layout.GDT_ADDR, 32),
        (layout.ZERO_PAGE_ADDR, 4096),
        (layout.PVH_MEMMAP_ADDR, 4096),
        (layout.PML4_ADDR, layout.PAGE_TABLES_END - layout.PML4_ADDR),
        (layout.CMDLINE_ADDR, layout.CMDLINE_MAX),
        (layout.ACPI_ADDR, layout.ACPI_MAX_SIZE),
        (layout.MPTABLE_ADDR, layout.MPTABLE_MAX_SIZE),
    ]
    areas.sort()
    for (a, alen), (b, _) in zip(areas, areas[1:], strict=False):
        assert a + alen <= b, hex(a)
    assert areas[-1][0] + areas[-1][1] <= layout.KERNEL_LOAD_ADDR
    assert layout.PCI_HOLE_START < layout.IOAPIC_ADDR < layout.LAPIC_ADDR < FOUR_GIB


def test_e820_small_guest():
    mem = GuestMemory.from_buffer(bytearray(64 * MIB))
    m = e820_map(mem)
    assert [(e.addr, e.end, e.type) for e in m] == [
        (0, 0x9FC00, E820_RAM),
        (0x9FC00, 0x100000, E820_RESERVED),
        (0x100000, 64 * MIB, E820_RAM),
    ]
    # the firmware tables lie in reserved memory
    for addr in (layout.ACPI_ADDR, layout.MPTABLE_ADDR):
        assert any(e.addr <= addr < e.end and e.type == E820_RESERVED for e in m)


def test_e820_high_ram():
    low = bytearray(2 * MIB)
    high = bytearray(MIB)
    mem = GuestMemory(
        [Region(0, len(low), memoryview(low)), Region(FOUR_GIB, len(high), memoryview(high))]
    )
    m = e820_map(mem)
    assert m[-1].addr == FOUR_GIB and m[-1].size == MIB and m[-1].type == E820_RAM
    assert m[2].end == 2 * MIB


def test_e820_too_small():
    with pytest.raises(ConfigError, match="at least 2 MiB"):
        e820_map(GuestMemory.from_buffer(bytearray(MIB)))

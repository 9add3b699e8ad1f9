"""Guest-physical layout of an x86 kvmlite machine, in one place.

Everything the VMM writes into guest RAM before the first instruction runs
lives below 1 MiB, where PC firmware keeps its data, so the kernel (loaded at
1 MiB by the boot protocol, Documentation/x86/boot.rst) never overlaps it::

    0x0000_0000  real-mode IVT / BDA                      (left zero)
    0x0000_0500  GDT                                       GDT_ADDR
    0x0000_7000  zero page (boot_params) or hvm_start_info ZERO_PAGE_ADDR
    0x0000_8000  PVH memory map (hvm_memmap_table_entry[]) PVH_MEMMAP_ADDR
    0x0000_9000  PML4, PDPT, 4 page directories            PML4_ADDR..
    0x0002_0000  kernel command line (up to 64 KiB)        CMDLINE_ADDR
    0x0009_FC00  EBDA (left zero)                          (reserved in e820)
    0x000A_0000  legacy VGA / option ROM hole              (reserved in e820)
    0x000E_0000  ACPI tables, RSDP first (Linux scans      ACPI_ADDR
                 0xE0000..0xFFFFF for "RSD PTR ")
    0x000F_0000  MP floating pointer + MP table (Linux     MPTABLE_ADDR
                 scans 0xF0000..0xFFFFF for "_MP_")
    0x0010_0000  bzImage protected-mode part, or at its    KERNEL_LOAD_ADDR
                 pref_address (16 MiB) when relocatable;
                 an ELF vmlinux goes to its p_paddr (>= 1 MiB)
    ...          initrd: page-aligned, as high as allowed below the top of low RAM
    ...          RAM up to min(size, PCI_HOLE_START)
    0xC000_0000  32-bit MMIO hole: PCI BARs                PCI_HOLE_START
    0xFEC0_0000  IOAPIC                                    IOAPIC_ADDR
    0xFEE0_0000  LAPIC                                     LAPIC_ADDR
    0x1_0000_0000 high RAM (when the guest has > 3 GiB)

The ACPI power-management block is emulated by the VMM at fixed I/O ports
(ACPI 6.4 §4.8.3); the FADT points at them and the DSDT's ``\\_S5_`` gives
the SLP_TYP value that powers the machine off.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmlite.errors import ConfigError
from kvmlite.memory import FOUR_GIB, MIB, PCI_HOLE_START, GuestMemory

__all__ = [
    "ACPI_ADDR",
    "ACPI_MAX_SIZE",
    "BIOS_RESERVED_END",
    "CMDLINE_ADDR",
    "CMDLINE_MAX",
    "E820_ACPI",
    "E820_RAM",
    "E820_RESERVED",
    "EBDA_START",
    "E820Entry",
    "FOUR_GIB",
    "GDT_ADDR",
    "IOAPIC_ADDR",
    "KERNEL_LOAD_ADDR",
    "LAPIC_ADDR",
    "MPTABLE_ADDR",
    "MPTABLE_MAX_SIZE",
    "PCI_HOLE_START",
    "PCI_MMIO32_END",
    "PM1A_CNT_BLK",
    "PM1A_CNT_LEN",
    "PM1A_EVT_BLK",
    "PM1A_EVT_LEN",
    "PM_TMR_BLK",
    "PM_TMR_LEN",
    "PML4_ADDR",
    "PVH_MEMMAP_ADDR",
    "S5_SLP_TYP",
    "SCI_IRQ",
    "ZERO_PAGE_ADDR",
    "e820_map",
    "low_ram_top",
]

# -- boot data below 1 MiB ----------------------------------------------------
GDT_ADDR = 0x500
ZERO_PAGE_ADDR = 0x7000  # boot_params (bzImage) or hvm_start_info (PVH)
PVH_MEMMAP_ADDR = 0x8000  # room for 256 hvm_memmap_table_entry of 24 bytes
#: PML4 at 0x9000, PDPT at 0xA000, page directories 0xB000..0xEFFF (4 GiB of 2 MiB pages).
PML4_ADDR = 0x9000
PAGE_TABLES_END = 0xF000
CMDLINE_ADDR = 0x20000
CMDLINE_MAX = 0x10000  # 64 KiB, the largest cmdline_size we honour
#: Extended BIOS Data Area (reserved, so a guest never takes it for RAM).
EBDA_START = 0x9FC00
ACPI_ADDR = 0xE0000
ACPI_MAX_SIZE = 0x10000  # 0xE0000..0xEFFFF
#: The MP spec 1.4 §4 lets the floating pointer live in the BIOS ROM area
#: 0xF0000..0xFFFFF; that leaves room for a table with 254 processors.
MPTABLE_ADDR = 0xF0000
MPTABLE_MAX_SIZE = 0x10000
BIOS_RESERVED_END = 0x100000

# -- the kernel ------------------------------------------------------------------
KERNEL_LOAD_ADDR = 1 * MIB

# -- the 32-bit MMIO hole ------------------------------------------------------------
IOAPIC_ADDR = 0xFEC00000
LAPIC_ADDR = 0xFEE00000
#: Last byte of the 32-bit PCI MMIO window handed to the guest (just below the IOAPIC).
PCI_MMIO32_END = IOAPIC_ADDR - 1

# -- ACPI fixed hardware, emulated by the VMM at these I/O ports -----------------------
PM1A_EVT_BLK = 0x600
PM1A_EVT_LEN = 4
PM1A_CNT_BLK = 0x604
PM1A_CNT_LEN = 2
PM_TMR_BLK = 0x608
PM_TMR_LEN = 4
SCI_IRQ = 9
#: The ``\\_S5_`` sleep type: the guest writes ``(S5_SLP_TYP << 10) | SLP_EN`` to PM1a_CNT.
S5_SLP_TYP = 5
SLP_TYP_SHIFT = 10
SLP_EN = 1 << 13

# -- e820 (ACPI 6.4 §15, "System Address Map Interfaces") ----------------------------
E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3


@dataclass(frozen=True)
class E820Entry:
    """One range of the BIOS memory map: [addr, addr+size) of ``type``."""

    addr: int
    size: int
    type: int

    @property
    def end(self) -> int:
        return self.addr + self.size


def low_ram_top(memory: GuestMemory) -> int:
    """End of the RAM region starting at 0 (at most ``PCI_HOLE_START``)."""
    return memory.region_of(0).end


def e820_map(memory: GuestMemory) -> list[E820Entry]:
    """The memory map the guest sees, in address order.

    RAM below the EBDA, the EBDA + VGA/BIOS area reserved (it holds the MP and
    ACPI tables, so the guest never reuses them), RAM from 1 MiB to the top of
    low RAM, and every region above 4 GiB as RAM.
    """
    top = low_ram_top(memory)
    if top < 2 * MIB:
        raise ConfigError(
            f"guest RAM of {top >> 10} KiB is too small: give the guest at least 2 MiB"
        )
    entries = [
        E820Entry(0, EBDA_START, E820_RAM),
        E820Entry(EBDA_START, BIOS_RESERVED_END - EBDA_START, E820_RESERVED),
        E820Entry(BIOS_RESERVED_END, top - BIOS_RESERVED_END, E820_RAM),
    ]
    for region in memory.regions:
        if region.gpa >= FOUR_GIB:
            entries.append(E820Entry(region.gpa, region.size, E820_RAM))
    return entries

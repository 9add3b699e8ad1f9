"""ACPI system description tables: RSDP, XSDT, FADT, FACS, DSDT, MADT, MCFG.

Layouts follow ACPI 6.4 §5.2: §5.2.5.3 RSDP (revision 2, 36 bytes, XSDT only),
§5.2.6 the common header, §5.2.8 XSDT, §5.2.9 FADT (revision 6, 276 bytes),
§5.2.10 FACS, §5.2.11.1 DSDT, §5.2.12 MADT, and the PCI Firmware spec 3.x
§4.1.2 MCFG. Every table's bytes sum to 0 mod 256 (the RSDP twice: its first
20 bytes and all 36).

Theory of operation: the tables are laid out one after another from
``base`` (``layout.ACPI_ADDR``, inside the 0xE0000..0xFFFFF range where Linux
looks for "RSD PTR "), each 16-byte aligned, the FACS 64-byte aligned as
§5.2.10 requires. ``AcpiTables.blob`` is written to guest RAM in one go;
``AcpiTables.tables`` keeps each table's bytes by signature for tests and
tools. The power-management registers are I/O ports the VMM emulates
(``layout.PM1A_*``); the guest powers off by writing SLP_TYP=5|SLP_EN.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from kvmlite.arch.x86 import layout
from kvmlite.arch.x86.acpi.dsdt import PciRoute, dsdt_aml
from kvmlite.errors import ConfigError
from kvmlite.memory import GuestMemory

OEM_ID = b"KVMLTE"
OEM_TABLE_ID = b"KVMLITE "
CREATOR_ID = b"KVML"

_HEADER = struct.Struct("<4sIBB6s8sI4sI")  # 36 bytes
_RSDP = struct.Struct("<8sB6sBIIQB3x")  # 36 bytes
_GAS = struct.Struct("<BBBBQ")  # Generic Address Structure, §5.2.3.2, 12 bytes

GAS_SYSTEM_IO = 1
ACCESS_BYTE, ACCESS_WORD, ACCESS_DWORD = 1, 2, 3

# FADT fixed feature flags (§5.2.9 Table 5.10).
FADT_WBINVD = 1 << 0
FADT_PROC_C1 = 1 << 2
FADT_PWR_BUTTON = 1 << 4  # 1: no fixed-feature power button
FADT_SLP_BUTTON = 1 << 5  # 1: no fixed-feature sleep button
# IA-PC boot architecture flags (§5.2.9.3).
IAPC_LEGACY_DEVICES = 1 << 0
IAPC_8042 = 1 << 1

# MADT (§5.2.12).
MADT_PCAT_COMPAT = 1 << 0
MADT_LOCAL_APIC = 0
MADT_IO_APIC = 1
MADT_INT_SRC_OVERRIDE = 2
MADT_LOCAL_APIC_NMI = 4
LAPIC_ENABLED = 1
MPS_INTI_CONFORMS = 0
MPS_INTI_ACTIVE_HIGH = 0x1
MPS_INTI_LEVEL = 0x3 << 2

FADT_REVISION = 6
FADT_MINOR = 4
FADT_SIZE = 276


@dataclass(frozen=True)
class Ecam:
    """A PCI Express enhanced configuration space window (buses 0..last_bus)."""

    base: int
    last_bus: int = 255

    @property
    def size(self) -> int:
        return (self.last_bus + 1) << 20


@dataclass
class AcpiTables:
    """The table blob to write at ``base`` and where the RSDP is."""

    base: int
    blob: bytes
    rsdp_addr: int
    tables: dict[str, bytes] = field(default_factory=dict)
    addresses: dict[str, int] = field(default_factory=dict)

    def write(self, memory: GuestMemory) -> None:
        memory.write(self.base, self.blob)


def checksum(data: bytes) -> int:
    return -sum(data) & 0xFF


def sdt(signature: bytes, revision: int, body: bytes) -> bytes:
    """A system description table: the common header (with checksum) + ``body``."""
    fields = [signature, _HEADER.size + len(body), revision, 0, OEM_ID, OEM_TABLE_ID, 1]
    fields += [CREATOR_ID, 1]
    raw = _HEADER.pack(*fields) + body
    fields[3] = checksum(raw)
    return _HEADER.pack(*fields) + body


def rsdp(xsdt_addr: int) -> bytes:
    fields = [b"RSD PTR ", 0, OEM_ID, 2, 0, _RSDP.size, xsdt_addr, 0]
    fields[1] = checksum(_RSDP.pack(*fields)[:20])
    fields[7] = checksum(_RSDP.pack(*fields))
    return _RSDP.pack(*fields)


def gas_io(port: int, length: int) -> bytes:
    access = {1: ACCESS_BYTE, 2: ACCESS_WORD, 4: ACCESS_DWORD}[length]
    return _GAS.pack(GAS_SYSTEM_IO, length * 8, 0, access, port)


def fadt(dsdt_addr: int, facs_addr: int) -> bytes:
    body = bytearray(FADT_SIZE - _HEADER.size)

    def put(offset: int, fmt: str, *values: int | bytes) -> None:
        struct.pack_into(fmt, body, offset - _HEADER.size, *values)

    put(36, "<II", facs_addr, dsdt_addr)  # FIRMWARE_CTRL, DSDT
    put(46, "<HI", layout.SCI_IRQ, 0)  # SCI_INT; SMI_CMD 0: ACPI is always enabled
    put(56, "<I", layout.PM1A_EVT_BLK)
    put(64, "<I", layout.PM1A_CNT_BLK)
    put(76, "<I", layout.PM_TMR_BLK)
    put(88, "<BBBB", layout.PM1A_EVT_LEN, layout.PM1A_CNT_LEN, 0, layout.PM_TMR_LEN)
    put(96, "<HH", 101, 1001)  # P_LVL2/3_LAT above 100/1000: C2/C3 not supported
    put(109, "<H", IAPC_LEGACY_DEVICES | IAPC_8042)
    # PWR_BUTTON clear: the fixed-feature power button of PM1 (PWRBTN_STS/EN), what
    # QMP system_powerdown presses; SLP_BUTTON set: no sleep button at all.
    put(112, "<I", FADT_WBINVD | FADT_PROC_C1 | FADT_SLP_BUTTON)
    put(131, "<B", FADT_MINOR)
    # X_FIRMWARE_CTRL stays 0: the FACS is below 4 GiB, and with both set Linux
    # installs the FACS twice. X_DSDT duplicates DSDT, as §5.2.9 allows.
    put(140, "<Q", dsdt_addr)
    put(148, "<12s", gas_io(layout.PM1A_EVT_BLK, layout.PM1A_EVT_LEN))
    put(172, "<12s", gas_io(layout.PM1A_CNT_BLK, layout.PM1A_CNT_LEN))
    put(208, "<12s", gas_io(layout.PM_TMR_BLK, layout.PM_TMR_LEN))
    put(268, "<8s", b"KVMLITE\0")  # hypervisor vendor identity
    return sdt(b"FACP", FADT_REVISION, bytes(body))


def facs() -> bytes:
    """FACS (§5.2.10): no checksum; version 2; no global lock, no waking vector."""
    return struct.pack("<4sIIIIIQB3xI24x", b"FACS", 64, 0, 0, 0, 0, 0, 2, 0)


def madt(num_vcpus: int) -> bytes:
    body = struct.pack("<II", layout.LAPIC_ADDR, MADT_PCAT_COMPAT)
    for cpu in range(num_vcpus):
        body += struct.pack("<BBBBI", MADT_LOCAL_APIC, 8, cpu, cpu, LAPIC_ENABLED)
    body += struct.pack("<BBBBII", MADT_IO_APIC, 12, num_vcpus, 0, layout.IOAPIC_ADDR, 0)
    # The PIT's IRQ 0 arrives on IOAPIC pin 2 (the PC-AT wiring MP tables use too).
    body += struct.pack("<BBBBIH", MADT_INT_SRC_OVERRIDE, 10, 0, 0, 2, MPS_INTI_CONFORMS)
    sci_flags = MPS_INTI_ACTIVE_HIGH | MPS_INTI_LEVEL
    body += struct.pack("<BBBBIH", MADT_INT_SRC_OVERRIDE, 10, 0, layout.SCI_IRQ, 9, sci_flags)
    body += struct.pack("<BBBHB", MADT_LOCAL_APIC_NMI, 6, 0xFF, MPS_INTI_CONFORMS, 1)
    return sdt(b"APIC", 5, body)


def mcfg(ecam: Ecam) -> bytes:
    body = bytes(8) + struct.pack("<QHBBI", ecam.base, 0, 0, ecam.last_bus, 0)
    return sdt(b"MCFG", 1, body)


def xsdt(pointers: Sequence[int]) -> bytes:
    return sdt(b"XSDT", 1, struct.pack(f"<{len(pointers)}Q", *pointers))


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & -alignment


def _exclude(window: tuple[int, int], lo: int, hi: int) -> tuple[int, int]:
    """Trim the ECAM area [lo, hi] off either end of ``window``; refuse a hole in the middle."""
    start, end = window
    if hi < start or lo > end:
        return window
    if lo <= start:
        return hi + 1, end
    if hi >= end:
        return start, lo - 1
    raise ConfigError(
        f"the ECAM area {lo:#x}..{hi:#x} lies inside the 32-bit PCI window"
        f" {start:#x}..{end:#x}: put it at either end of the window"
    )


def build_acpi_tables(
    num_vcpus: int,
    *,
    pci_routes: Sequence[PciRoute] = (),
    ecam: Ecam | None = None,
    mmio32: tuple[int, int] = (layout.PCI_HOLE_START, layout.PCI_MMIO32_END),
    mmio64: tuple[int, int] | None = None,
    base: int = layout.ACPI_ADDR,
) -> AcpiTables:
    """All tables for a machine with ``num_vcpus`` CPUs, laid out from ``base``.

    ``pci_routes`` is the static ``_PRT`` ((device, pin, GSI) rows); ``ecam``
    adds an MCFG and makes PCI0 a PCIe root (PNP0A08); ``mmio32``/``mmio64``
    are the root bridge's memory windows (inclusive bounds).
    """
    if not 1 <= num_vcpus <= 254:
        raise ConfigError(f"ACPI tables describe 1..254 vCPUs (xAPIC ids), not {num_vcpus}")
    last_bus = ecam.last_bus if ecam is not None else 255
    if ecam is not None:
        mmio32 = _exclude(mmio32, ecam.base, ecam.base + ecam.size - 1)
    try:
        body = dsdt_aml(
            pci_routes,
            ecam=(ecam.base, ecam.size) if ecam else None,
            last_bus=last_bus,
            mmio32=mmio32,
            mmio64=mmio64,
        )
    except ValueError as e:
        raise ConfigError(f"cannot build the DSDT: {e}") from e

    # Lay out: RSDP, XSDT, FADT, FACS, DSDT, MADT, MCFG. Addresses first,
    # because XSDT and FADT point at the tables after them.
    order = ["RSDP", "XSDT", "FACP", "FACS", "DSDT", "APIC"] + (["MCFG"] if ecam else [])
    dsdt = sdt(b"DSDT", 2, body)  # revision 2: 64-bit integers
    sizes = {
        "RSDP": _RSDP.size,
        "XSDT": _HEADER.size + 8 * (len(order) - 4),  # FACP, APIC, [MCFG]
        "FACP": FADT_SIZE,
        "FACS": 64,
        "DSDT": len(dsdt),
        "APIC": len(madt(num_vcpus)),
        "MCFG": _HEADER.size + 24,
    }
    addr: dict[str, int] = {}
    cursor = base
    for sig in order:
        cursor = _align(cursor, 64 if sig == "FACS" else 16)
        addr[sig] = cursor
        cursor += sizes[sig]
    if cursor - base > layout.ACPI_MAX_SIZE:
        raise ConfigError(f"ACPI tables of {cursor - base} bytes do not fit their area")

    tables = {
        "RSDP": rsdp(addr["XSDT"]),
        "XSDT": xsdt([addr[s] for s in order if s in ("FACP", "APIC", "MCFG")]),
        "FACP": fadt(addr["DSDT"], addr["FACS"]),
        "FACS": facs(),
        "DSDT": dsdt,
        "APIC": madt(num_vcpus),
    }
    if ecam is not None:
        tables["MCFG"] = mcfg(ecam)
    blob = bytearray(cursor - base)
    for sig in order:
        data = tables[sig]
        assert len(data) == sizes[sig], sig
        blob[addr[sig] - base : addr[sig] - base + len(data)] = data
    return AcpiTables(base, bytes(blob), addr["RSDP"], tables, addr)

"""Intel MultiProcessor Specification 1.4 tables (MP floating pointer + config table).

Layout follows the MP spec 1.4 §4.1 (floating pointer structure), §4.2 (MP
configuration table header) and §4.3 (base table entries, in type order:
processor, bus, I/O APIC, I/O interrupt assignment, local interrupt
assignment). Every checksum makes its structure's bytes sum to 0 mod 256.

Interrupt wiring is the PC-AT one QEMU and kvmtool also give: ISA IRQ 0
(the PIT) on IOAPIC pin 2, every other ISA IRQ on the pin of the same number,
the 8259 as ExtINT on pin 0; ExtINT on LINT0 and NMI on LINT1 of every LAPIC.
PCI INTx entries (§D.3: source IRQ = device << 2 | pin) come from the caller.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from kvmlite.arch.x86 import layout
from kvmlite.errors import ConfigError
from kvmlite.memory import GuestMemory

MPF_SIGNATURE = b"_MP_"
MPC_SIGNATURE = b"PCMP"
MP_SPEC_REV = 4  # version 1.4

MP_PROCESSOR = 0
MP_BUS = 1
MP_IOAPIC = 2
MP_INTSRC = 3
MP_LINTSRC = 4

MP_INT = 0
MP_NMI = 1
MP_EXTINT = 3

CPU_ENABLED = 1 << 0
CPU_BOOTPROCESSOR = 1 << 1
IOAPIC_ENABLED = 1 << 0
#: I/O interrupt flags (§4.3.4 Table 4-10): polarity bits 1:0, trigger mode bits 3:2.
IRQ_CONFORMING = 0x0
IRQ_PCI_LEVEL_LOW = 0x3 | (0x3 << 2)

PCI_BUS_ID = 0
ISA_BUS_ID = 1
LAPIC_VERSION = 0x14
IOAPIC_VERSION = 0x11
CPU_SIGNATURE = 0x600  # family 6; the guest reads the real one from CPUID
CPU_FEATURES = (1 << 0) | (1 << 9)  # FPU, APIC
ALL_LAPICS = 0xFF

_HEADER = struct.Struct("<4sHBB8s12sIHHIHBB")  # 44 bytes
_FLOATING = struct.Struct("<4sIBBBB4s")  # 16 bytes
_PROCESSOR = struct.Struct("<BBBBII8x")  # 20 bytes
_BUS = struct.Struct("<BB6s")
_IOAPIC = struct.Struct("<BBBBI")
_INTSRC = struct.Struct("<BBHBBBB")

PciRoute = tuple[int, int, int]  # (device 0..31, pin 0=INTA..3=INTD, IOAPIC pin)


def checksum(data: bytes) -> int:
    """The byte that makes ``data`` plus itself sum to 0 mod 256."""
    return -sum(data) & 0xFF


def _entries(num_vcpus: int, pci_routes: Iterable[PciRoute]) -> list[bytes]:
    ioapic_id = num_vcpus
    out = []
    for cpu in range(num_vcpus):
        flags = CPU_ENABLED | (CPU_BOOTPROCESSOR if cpu == 0 else 0)
        out.append(
            _PROCESSOR.pack(MP_PROCESSOR, cpu, LAPIC_VERSION, flags, CPU_SIGNATURE, CPU_FEATURES)
        )
    out.append(_BUS.pack(MP_BUS, PCI_BUS_ID, b"PCI   "))
    out.append(_BUS.pack(MP_BUS, ISA_BUS_ID, b"ISA   "))
    out.append(
        _IOAPIC.pack(MP_IOAPIC, ioapic_id, IOAPIC_VERSION, IOAPIC_ENABLED, layout.IOAPIC_ADDR)
    )
    # The 8259 cascade output reaches the IOAPIC as ExtINT on pin 0.
    out.append(_INTSRC.pack(MP_INTSRC, MP_EXTINT, IRQ_CONFORMING, ISA_BUS_ID, 0, ioapic_id, 0))
    for irq in range(16):
        if irq == 2:  # the cascade: pin 2 belongs to IRQ 0
            continue
        pin = 2 if irq == 0 else irq
        out.append(_INTSRC.pack(MP_INTSRC, MP_INT, IRQ_CONFORMING, ISA_BUS_ID, irq, ioapic_id, pin))
    for device, pin, ioapic_pin in pci_routes:
        if not (0 <= device < 32 and 0 <= pin < 4 and 0 <= ioapic_pin < 24):
            raise ConfigError(
                f"PCI route (device {device}, pin {pin}, IOAPIC pin {ioapic_pin}) is invalid:"
                " device must be 0..31, pin 0..3 (INTA..INTD), IOAPIC pin 0..23"
            )
        src = (device << 2) | pin
        out.append(
            _INTSRC.pack(
                MP_INTSRC, MP_INT, IRQ_PCI_LEVEL_LOW, PCI_BUS_ID, src, ioapic_id, ioapic_pin
            )
        )
    out.append(_INTSRC.pack(MP_LINTSRC, MP_EXTINT, IRQ_CONFORMING, ISA_BUS_ID, 0, ALL_LAPICS, 0))
    out.append(_INTSRC.pack(MP_LINTSRC, MP_NMI, IRQ_CONFORMING, ISA_BUS_ID, 0, ALL_LAPICS, 1))
    return out


def build_mptable(
    num_vcpus: int, pci_routes: Sequence[PciRoute] = (), addr: int = layout.MPTABLE_ADDR
) -> bytes:
    """The floating pointer at ``addr`` followed by the configuration table."""
    if not 1 <= num_vcpus <= 254:
        raise ConfigError(f"the MP table describes 1..254 vCPUs, not {num_vcpus}")
    entries = _entries(num_vcpus, pci_routes)
    body = b"".join(entries)
    length = _HEADER.size + len(body)
    fields = [MPC_SIGNATURE, length, MP_SPEC_REV, 0, b"KVMLITE ", b"KVMLITE MP  "]
    fields += [0, 0, len(entries), layout.LAPIC_ADDR, 0, 0, 0]
    header = _HEADER.pack(*fields)
    fields[3] = checksum(header + body)
    table = _HEADER.pack(*fields) + body

    table_addr = addr + _FLOATING.size
    fp = _FLOATING.pack(MPF_SIGNATURE, table_addr, 1, MP_SPEC_REV, 0, 0, b"\0" * 4)
    fp = _FLOATING.pack(MPF_SIGNATURE, table_addr, 1, MP_SPEC_REV, checksum(fp), 0, b"\0" * 4)
    blob = fp + table
    if len(blob) > layout.MPTABLE_MAX_SIZE:
        raise ConfigError(f"MP table of {len(blob)} bytes does not fit its area")
    return blob


def write_mptable(memory: GuestMemory, num_vcpus: int, pci_routes: Sequence[PciRoute] = ()) -> int:
    """Write the MP table at ``layout.MPTABLE_ADDR``; returns its size."""
    blob = build_mptable(num_vcpus, pci_routes)
    memory.write(layout.MPTABLE_ADDR, blob)
    return len(blob)

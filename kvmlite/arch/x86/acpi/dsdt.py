"""The DSDT body: ``\\_S5_``, the PCI root bridge and COM1, without methods.

Objects follow ACPI 6.4 §7.4.2 (``\\_S5_`` sleep package: SLP_TYPa, SLP_TYPb),
§6.1 (_HID/_CID/_UID), §6.2.2 (_CRS), §6.2.13 (_PRT), §6.5.5/6.5.6 (_SEG,
_BBN) and the PCI Firmware Specification 3.x §4.1 (PNP0A03 / PNP0A08 root
bridges, PNP0C02 reserving the ECAM area so Linux trusts the MCFG).
"""

from __future__ import annotations

from collections.abc import Sequence

from kvmlite.arch.x86 import layout
from kvmlite.arch.x86.acpi import aml

#: A ``_PRT`` row: PCI device number 0..31, pin 0..3 (INTA..INTD), global system interrupt.
PciRoute = tuple[int, int, int]

COM1_PORT = 0x3F8
COM1_IRQ = 4


def s5_package() -> bytes:
    """``Name(\\_S5_, Package() {5, 5, 0, 0})``."""
    typ = aml.integer(layout.S5_SLP_TYP)
    return aml.name("\\_S5_", aml.package([typ, typ, aml.integer(0), aml.integer(0)]))


def prt(routes: Sequence[PciRoute]) -> bytes:
    """A static ``_PRT``: Package of {Address 0xDDDDFFFF, Pin, Source 0, GSI}."""
    rows = []
    for dev, pin, gsi in routes:
        if not (0 <= dev < 32 and 0 <= pin < 4 and 0 <= gsi < 1 << 32):
            raise ValueError(f"PCI route (device {dev}, pin {pin}, GSI {gsi}) is invalid")
        address = (dev << 16) | 0xFFFF
        rows.append(
            aml.package([aml.integer(address), aml.integer(pin), aml.integer(0), aml.integer(gsi)])
        )
    return aml.name("_PRT", aml.package(rows))


def pci_root(
    routes: Sequence[PciRoute],
    *,
    ecam: bool,
    last_bus: int,
    mmio32: tuple[int, int],
    mmio64: tuple[int, int] | None,
) -> bytes:
    """``Device(PCI0)`` with a static _CRS and _PRT."""
    crs = [
        aml.word_bus_number(0, last_bus),
        aml.word_io(0x0000, 0x0CF7),
        aml.io_port(0x0CF8, 8),  # the configuration mechanism #1 ports themselves
        aml.word_io(0x0D00, 0xFFFF),
        aml.dword_memory(*mmio32),
    ]
    if mmio64 is not None:
        crs.append(aml.qword_memory(*mmio64))
    children = [aml.name("_HID", aml.eisa_id("PNP0A03"))]
    if ecam:
        children.append(aml.name("_CID", aml.eisa_id("PNP0A08")))
    children += [
        aml.name("_SEG", aml.integer(0)),
        aml.name("_BBN", aml.integer(0)),
        aml.name("_UID", aml.integer(0)),
        aml.name("_CRS", aml.resource_template(crs)),
        prt(routes),
    ]
    return aml.device("PCI0", children)


def com1() -> bytes:
    """``Device(COM1)``: a 16550 at 0x3F8, IRQ 4."""
    return aml.device(
        "COM1",
        [
            aml.name("_HID", aml.eisa_id("PNP0501")),
            aml.name("_UID", aml.integer(1)),
            aml.name(
                "_CRS",
                aml.resource_template([aml.io_port(COM1_PORT, 8), aml.irq_no_flags(COM1_IRQ)]),
            ),
        ],
    )


def ecam_reservation(base: int, size: int) -> bytes:
    """``Device(RES0)`` (PNP0C02, motherboard resources) holding the ECAM window."""
    return aml.device(
        "RES0",
        [
            aml.name("_HID", aml.eisa_id("PNP0C02")),
            aml.name("_UID", aml.integer(0)),
            aml.name(
                "_CRS",
                aml.resource_template([aml.qword_memory(base, base + size - 1, consumer=True)]),
            ),
        ],
    )


def dsdt_aml(
    routes: Sequence[PciRoute],
    *,
    ecam: tuple[int, int] | None,
    last_bus: int,
    mmio32: tuple[int, int],
    mmio64: tuple[int, int] | None,
) -> bytes:
    """The DSDT's AML (everything after the 36-byte header)."""
    devices = [
        pci_root(routes, ecam=ecam is not None, last_bus=last_bus, mmio32=mmio32, mmio64=mmio64),
        com1(),
    ]
    if ecam is not None:
        devices.append(ecam_reservation(*ecam))
    return s5_package() + aml.scope("\\_SB", devices)

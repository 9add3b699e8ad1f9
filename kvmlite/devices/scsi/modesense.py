"""MODE SENSE(6) and MODE SENSE(10) data (SPC-4 §6.11, §6.12, §7.5 "Mode parameters").

A LUN describes its mode pages as ``ModePage`` objects (current values and
the changeable mask); ``mode_sense`` builds the header, the optional block
descriptor and the pages the CDB asks for (one page, or 0x3F for all).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from kvmlite.devices.scsi import cdb as op
from kvmlite.devices.scsi.cdb import Cdb, CdbError
from kvmlite.devices.scsi.sense import (
    SENSE_INVALID_FIELD_IN_CDB,
    SENSE_SAVING_PARAMETERS_NOT_SUPPORTED,
)

ALL_PAGES = 0x3F
PC_CURRENT, PC_CHANGEABLE, PC_DEFAULT, PC_SAVED = 0, 1, 2, 3


@dataclass(frozen=True)
class ModePage:
    """One mode page: ``current()`` builds it with its 2-byte page header."""

    code: int
    current: Callable[[], bytes]

    def changeable(self) -> bytes:
        # Nothing is changeable (kvmlite has no MODE SELECT): header + zeros.
        body = self.current()
        return body[:2] + bytes(len(body) - 2)


def mode_sense(
    cdb: Cdb,
    pages: dict[int, ModePage],
    *,
    device_specific: int = 0,
    block_descriptor: tuple[int, int] | None = None,
) -> bytes:
    """The MODE SENSE data ``cdb`` asks for; ``block_descriptor`` = (blocks, block size)."""
    ten = cdb.opcode == op.MODE_SENSE_10
    dbd = bool(cdb.u8(1) & 0x08)
    pc, code, subpage = cdb.u8(2) >> 6, cdb.u8(2) & 0x3F, cdb.u8(3)
    if pc == PC_SAVED:
        raise CdbError(SENSE_SAVING_PARAMETERS_NOT_SUPPORTED)
    if subpage not in (0, 0xFF) or (subpage == 0xFF and code != ALL_PAGES):
        raise CdbError(SENSE_INVALID_FIELD_IN_CDB, f"mode subpage {subpage:#04x}")
    if code == ALL_PAGES:
        chosen = [pages[c] for c in sorted(pages)]
    elif code in pages:
        chosen = [pages[code]]
    else:
        raise CdbError(SENSE_INVALID_FIELD_IN_CDB, f"mode page {code:#04x}")
    body = b"".join(p.changeable() if pc == PC_CHANGEABLE else p.current() for p in chosen)
    desc = b""
    if block_descriptor is not None and not dbd:
        blocks, size = block_descriptor
        desc = struct.pack(">IB3s", min(blocks, 0xFFFFFFFF), 0, size.to_bytes(3, "big"))
    if ten:
        total = 8 + len(desc) + len(body)
        head = struct.pack(">HBBBBH", total - 2, 0, device_specific, 0, 0, len(desc))
        return (head + desc + body)[: cdb.u16(7)]
    total = 4 + len(desc) + len(body)
    head = struct.pack(">BBBB", min(total - 1, 0xFF), 0, device_specific, len(desc))
    return (head + desc + body)[: cdb.u8(4)]

"""Command descriptor blocks: operation codes and the fields every command shares.

SPC-4 §4.2 (CDB formats) and the command tables of SPC-4 §6, SBC-3 §5 and
MMC-6 §6. The group code (top three bits of the operation code) fixes the
CDB's length: 0 -> 6 bytes, 1 and 2 -> 10, 4 -> 16, 5 -> 12; group 3 is
reserved/variable length and 6-7 vendor specific, which kvmlite does not
implement.

``parse_cdb`` checks the length and decodes LBA and transfer length for the
read/write family (SBC-3 §5.x); every other command reads its own fields.
It raises only ``CdbError``, which carries the sense the initiator sees.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmlite.devices.scsi.sense import SENSE_INVALID_FIELD_IN_CDB, SENSE_INVALID_OPCODE, Sense

# SPC-4
TEST_UNIT_READY = 0x00
REQUEST_SENSE = 0x03
INQUIRY = 0x12
MODE_SELECT_6 = 0x15
MODE_SENSE_6 = 0x1A
START_STOP_UNIT = 0x1B
SEND_DIAGNOSTIC = 0x1D
PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
MODE_SELECT_10 = 0x55
MODE_SENSE_10 = 0x5A
REPORT_LUNS = 0xA0
# SBC-3
READ_6 = 0x08
WRITE_6 = 0x0A
READ_CAPACITY_10 = 0x25
READ_10 = 0x28
WRITE_10 = 0x2A
VERIFY_10 = 0x2F
SYNCHRONIZE_CACHE_10 = 0x35
WRITE_SAME_10 = 0x41
UNMAP = 0x42
READ_16 = 0x88
WRITE_16 = 0x8A
VERIFY_16 = 0x8F
SYNCHRONIZE_CACHE_16 = 0x91
WRITE_SAME_16 = 0x93
SERVICE_ACTION_IN_16 = 0x9E
SAI_READ_CAPACITY_16 = 0x10
READ_12 = 0xA8
WRITE_12 = 0xAA
# MMC-6
READ_SUB_CHANNEL = 0x42  # same code as UNMAP: the device type decides
READ_TOC_PMA_ATIP = 0x43
GET_CONFIGURATION = 0x46
GET_EVENT_STATUS_NOTIFICATION = 0x4A
READ_DISC_INFORMATION = 0x51
READ_TRACK_INFORMATION = 0x52
SET_CD_SPEED = 0xBB
MECHANISM_STATUS = 0xBD

#: The largest CDB kvmlite accepts (virtio-scsi's default cdb_size).
MAX_CDB_LEN = 32

_GROUP_LEN = {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}

# opcode -> (lba offset, lba bytes, length offset, length bytes); a zero
# READ(6)/WRITE(6) length means 256 blocks (SBC-3 §5.7).
_RW_FIELDS: dict[int, tuple[int, int, int, int]] = {
    READ_6: (1, 3, 4, 1),
    WRITE_6: (1, 3, 4, 1),
    READ_10: (2, 4, 7, 2),
    WRITE_10: (2, 4, 7, 2),
    VERIFY_10: (2, 4, 7, 2),
    WRITE_SAME_10: (2, 4, 7, 2),
    SYNCHRONIZE_CACHE_10: (2, 4, 7, 2),
    READ_12: (2, 4, 6, 4),
    WRITE_12: (2, 4, 6, 4),
    READ_16: (2, 8, 10, 4),
    WRITE_16: (2, 8, 10, 4),
    VERIFY_16: (2, 8, 10, 4),
    WRITE_SAME_16: (2, 8, 10, 4),
    SYNCHRONIZE_CACHE_16: (2, 8, 10, 4),
}


class CdbError(Exception):
    """A CDB the device rejects; ``sense`` is what CHECK CONDITION reports."""

    def __init__(self, sense: Sense, reason: str = "") -> None:
        super().__init__(reason or f"sense {sense.key:x}/{sense.asc:02x}/{sense.ascq:02x}")
        self.sense = sense


@dataclass(frozen=True)
class Cdb:
    """A length-checked CDB; ``lba``/``blocks`` are set for the read/write family."""

    raw: bytes
    opcode: int
    lba: int = 0
    blocks: int = 0

    def u8(self, offset: int) -> int:
        return self.raw[offset]

    def u16(self, offset: int) -> int:
        return int.from_bytes(self.raw[offset : offset + 2], "big")

    def u32(self, offset: int) -> int:
        return int.from_bytes(self.raw[offset : offset + 4], "big")


def cdb_length(opcode: int) -> int:
    """The CDB length of ``opcode``'s group; CdbError for groups kvmlite does not implement."""
    length = _GROUP_LEN.get(opcode >> 5)
    if length is None:
        raise CdbError(SENSE_INVALID_OPCODE, f"opcode {opcode:#04x}: no such command group")
    return length


def parse_cdb(data: bytes) -> Cdb:
    """Check ``data`` holds a whole CDB and decode the read/write fields."""
    data = bytes(data[:MAX_CDB_LEN])
    if not data:
        raise CdbError(SENSE_INVALID_OPCODE, "empty CDB")
    opcode = data[0]
    length = cdb_length(opcode)
    if len(data) < length:
        raise CdbError(SENSE_INVALID_FIELD_IN_CDB, f"CDB of {len(data)} bytes, {length} needed")
    raw = data[:length]
    fields = _RW_FIELDS.get(opcode)
    if fields is None:
        return Cdb(raw, opcode)
    lba_at, lba_n, len_at, len_n = fields
    lba = int.from_bytes(raw[lba_at : lba_at + lba_n], "big")
    blocks = int.from_bytes(raw[len_at : len_at + len_n], "big")
    if opcode in (READ_6, WRITE_6):
        lba &= 0x1FFFFF
        blocks = blocks or 256
    return Cdb(raw, opcode, lba, blocks)

"""SCSI status codes and sense data (SAM-5 §5.3, SPC-4 §4.5 "Sense data").

A command that fails ends with CHECK CONDITION and *sense data* naming why:
a sense key (the class of failure) and an additional sense code and
qualifier (ASC/ASCQ, SPC-4 Annex D). kvmlite builds fixed-format sense
(response code 0x70, SPC-4 §4.5.3), which every initiator accepts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# SAM-5 §5.3.1 status codes
GOOD = 0x00
CHECK_CONDITION = 0x02
BUSY = 0x08

# SPC-4 §4.5.6 sense keys
NO_SENSE = 0x0
NOT_READY = 0x2
MEDIUM_ERROR = 0x3
HARDWARE_ERROR = 0x4
ILLEGAL_REQUEST = 0x5
UNIT_ATTENTION = 0x6
DATA_PROTECT = 0x7

FIXED_SENSE_LEN = 18
RESPONSE_CODE_CURRENT_FIXED = 0x70


@dataclass(frozen=True)
class Sense:
    """A sense key with its ASC/ASCQ (SPC-4 Annex D names)."""

    key: int
    asc: int
    ascq: int

    def fixed(self, information: int | None = None) -> bytes:
        """Fixed-format sense data (18 bytes); ``information`` sets VALID + INFORMATION."""
        code = RESPONSE_CODE_CURRENT_FIXED | (0x80 if information is not None else 0)
        return struct.pack(
            ">BBBIBIBBB3s",
            code,
            0,
            self.key,
            (information or 0) & 0xFFFFFFFF,
            FIXED_SENSE_LEN - 8,
            0,
            self.asc,
            self.ascq,
            0,
            b"\0\0\0",
        )

    @classmethod
    def parse(cls, data: bytes) -> Sense:
        """Key/ASC/ASCQ of fixed (0x70/0x71) or descriptor (0x72/0x73) sense data."""
        if len(data) >= 4 and data[0] & 0x7F in (0x72, 0x73):
            return cls(data[1] & 0xF, data[2], data[3])
        if len(data) >= 14 and data[0] & 0x7F in (0x70, 0x71):
            return cls(data[2] & 0xF, data[12], data[13])
        raise ValueError(f"not sense data: {bytes(data[:4]).hex()}")


SENSE_NO_SENSE = Sense(NO_SENSE, 0x00, 0x00)
# NOT READY
SENSE_MEDIUM_NOT_PRESENT = Sense(NOT_READY, 0x3A, 0x00)
SENSE_MEDIUM_NOT_PRESENT_TRAY_CLOSED = Sense(NOT_READY, 0x3A, 0x01)
SENSE_MEDIUM_NOT_PRESENT_TRAY_OPEN = Sense(NOT_READY, 0x3A, 0x02)
# ILLEGAL REQUEST
SENSE_INVALID_OPCODE = Sense(ILLEGAL_REQUEST, 0x20, 0x00)
SENSE_LBA_OUT_OF_RANGE = Sense(ILLEGAL_REQUEST, 0x21, 0x00)
SENSE_INVALID_FIELD_IN_CDB = Sense(ILLEGAL_REQUEST, 0x24, 0x00)
SENSE_LUN_NOT_SUPPORTED = Sense(ILLEGAL_REQUEST, 0x25, 0x00)
SENSE_INVALID_FIELD_IN_PARAMETER_LIST = Sense(ILLEGAL_REQUEST, 0x26, 0x00)
SENSE_PARAMETER_LIST_LENGTH_ERROR = Sense(ILLEGAL_REQUEST, 0x1A, 0x00)
SENSE_SAVING_PARAMETERS_NOT_SUPPORTED = Sense(ILLEGAL_REQUEST, 0x39, 0x00)
SENSE_MEDIUM_REMOVAL_PREVENTED = Sense(ILLEGAL_REQUEST, 0x53, 0x02)
# UNIT ATTENTION
SENSE_MEDIUM_MAY_HAVE_CHANGED = Sense(UNIT_ATTENTION, 0x28, 0x00)
SENSE_POWER_ON_RESET = Sense(UNIT_ATTENTION, 0x29, 0x00)
SENSE_CAPACITY_DATA_CHANGED = Sense(UNIT_ATTENTION, 0x2A, 0x09)
SENSE_UA_MEDIUM_NOT_PRESENT = Sense(UNIT_ATTENTION, 0x3A, 0x00)
# errors
SENSE_UNRECOVERED_READ_ERROR = Sense(MEDIUM_ERROR, 0x11, 0x00)
SENSE_WRITE_ERROR = Sense(MEDIUM_ERROR, 0x0C, 0x00)
SENSE_WRITE_PROTECTED = Sense(DATA_PROTECT, 0x27, 0x00)
SENSE_INTERNAL_TARGET_FAILURE = Sense(HARDWARE_ERROR, 0x44, 0x00)

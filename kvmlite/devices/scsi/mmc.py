"""MMC-6 response data of a read-only CD/DVD drive: pure functions of the medium.

READ TOC/PMA/ATIP (MMC-6 §6.34), GET CONFIGURATION (§6.6, features §5.3),
GET EVENT STATUS NOTIFICATION (§6.7, media class §6.7.2.4), READ DISC
INFORMATION (§6.22) and the capabilities mode page 0x2A (MMC-3 §5.5.10,
which Linux's sr driver reads). A medium is one data track in one complete
session starting at LBA 0.
"""

from __future__ import annotations

import struct

from kvmlite.devices.scsi.cdb import Cdb, CdbError
from kvmlite.devices.scsi.sense import SENSE_INVALID_FIELD_IN_CDB

CD_BLOCK = 2048
#: More 2048-byte blocks than an 80-minute CD holds: the medium is a DVD.
CD_MAX_BLOCKS = 80 * 60 * 75
LEADOUT_TRACK = 0xAA
ADR_CONTROL_DATA = 0x14  # ADR 1 (Q sub-channel: position), CONTROL 4 (data track)

# GET CONFIGURATION profiles (MMC-6 §5.3.1) and features
PROFILE_NONE = 0x0000
PROFILE_CD_ROM = 0x0008
PROFILE_DVD_ROM = 0x0010
FEATURE_PROFILE_LIST = 0x0000
FEATURE_CORE = 0x0001
FEATURE_MORPHING = 0x0002
FEATURE_REMOVABLE_MEDIUM = 0x0003
FEATURE_RANDOM_READABLE = 0x0010
FEATURE_CD_READ = 0x001E
FEATURE_DVD_READ = 0x001F

# GESN (MMC-6 §6.7): notification class bits and media event codes
NOTIFICATION_CLASS_MEDIA = 4
MEDIA_CLASS_BIT = 1 << NOTIFICATION_CLASS_MEDIA
MEDIA_EVENT_NO_CHANGE = 0
MEDIA_EVENT_EJECT_REQUEST = 1
MEDIA_EVENT_NEW_MEDIA = 2
MEDIA_EVENT_MEDIA_REMOVAL = 3
MEDIA_STATUS_DOOR_OPEN = 0x01
MEDIA_STATUS_MEDIA_PRESENT = 0x02

MODE_PAGE_CAPABILITIES = 0x2A
MODE_PAGE_ERROR_RECOVERY = 0x01


def lba_to_msf(lba: int) -> bytes:
    """The 4-byte MSF address field of ``lba`` (MMC-6 §4.2.3.5: 150 frames of pre-gap)."""
    frames = lba + 150
    return bytes([0, frames // (60 * 75) & 0xFF, frames // 75 % 60, frames % 75])


def _address(lba: int, msf: bool) -> bytes:
    return lba_to_msf(lba) if msf else struct.pack(">I", lba)


def toc_format(cdb: Cdb) -> int:
    """The READ TOC format: byte 2, or the pre-MMC field in bits 7-6 of byte 9."""
    fmt = cdb.u8(2) & 0x0F
    if fmt == 0 and cdb.u8(9) >> 6:
        fmt = cdb.u8(9) >> 6
    return fmt


def read_toc(cdb: Cdb, blocks: int) -> bytes:
    """READ TOC/PMA/ATIP formats 0 (TOC), 1 (session info) and 2 (full TOC)."""
    msf = bool(cdb.u8(1) & 0x02)
    fmt = toc_format(cdb)
    number = cdb.u8(6)
    if fmt == 0:
        if number > 1 and number != LEADOUT_TRACK:
            raise CdbError(SENSE_INVALID_FIELD_IN_CDB, f"TOC starting track {number}")
        tracks = [] if number == LEADOUT_TRACK else [(1, 0)]
        tracks.append((LEADOUT_TRACK, blocks))
        body = b"".join(
            bytes([0, ADR_CONTROL_DATA, t, 0]) + _address(lba, msf) for t, lba in tracks
        )
        return struct.pack(">HBB", 2 + len(body), 1, 1) + body
    if fmt == 1:
        body = bytes([0, ADR_CONTROL_DATA, 1, 0]) + _address(0, msf)
        return struct.pack(">HBB", 2 + len(body), 1, 1) + body
    if fmt == 2:
        # Full TOC, always in MSF: points A0 (first track), A1 (last), A2 (lead-out), 1.
        def point(p: int, pmsf: bytes) -> bytes:
            return bytes([1, ADR_CONTROL_DATA, 0, p, 0, 0, 0, 0]) + pmsf[1:]

        body = (
            point(0xA0, bytes([0, 1, 0x00, 0]))
            + point(0xA1, bytes([0, 1, 0, 0]))
            + point(0xA2, lba_to_msf(blocks))
            + point(1, lba_to_msf(0))
        )
        return struct.pack(">HBB", 2 + len(body), 1, 1) + body
    raise CdbError(SENSE_INVALID_FIELD_IN_CDB, f"TOC format {fmt}")


def current_profile(blocks: int | None) -> int:
    if blocks is None:
        return PROFILE_NONE
    return PROFILE_DVD_ROM if blocks > CD_MAX_BLOCKS else PROFILE_CD_ROM


def _feature(code: int, current: bool, data: bytes, version: int = 0) -> bytes:
    flags = version << 2 | (0x02 if code <= FEATURE_REMOVABLE_MEDIUM else 0) | int(current)
    return struct.pack(">HBB", code, flags, len(data)) + data


def get_configuration(cdb: Cdb, blocks: int | None, locked: bool) -> bytes:
    """GET CONFIGURATION with RT 0 (all from the start), 1 (current) or 2 (that one)."""
    rt = cdb.u8(1) & 0x03
    start = cdb.u16(2)
    if rt == 3:
        raise CdbError(SENSE_INVALID_FIELD_IN_CDB, "GET CONFIGURATION RT 3")
    profile = current_profile(blocks)
    cd = profile == PROFILE_CD_ROM
    dvd = profile == PROFILE_DVD_ROM
    profiles = b"".join(
        struct.pack(">HBB", p, int(p == profile), 0) for p in (PROFILE_DVD_ROM, PROFILE_CD_ROM)
    )
    features = [
        (FEATURE_PROFILE_LIST, True, profiles, 0),
        (FEATURE_CORE, True, struct.pack(">IBBH", 1, 0, 0, 0), 1),  # SCSI family interface
        (FEATURE_MORPHING, True, bytes(4), 1),
        # Loading mechanism 1 (tray), Load, Eject, Lock (MMC-6 §5.3.5)
        (FEATURE_REMOVABLE_MEDIUM, True, bytes([0x39 | (0x04 if locked else 0), 0, 0, 0]), 0),
        (FEATURE_RANDOM_READABLE, blocks is not None, struct.pack(">IHBB", CD_BLOCK, 16, 0, 0), 0),
        (FEATURE_CD_READ, cd, bytes(4), 0),
        (FEATURE_DVD_READ, dvd, b"", 0),
    ]
    out = b""
    for code, current, data, version in features:
        if code < start or (rt == 1 and not current) or (rt == 2 and code != start):
            continue
        out += _feature(code, current, data, version)
    return struct.pack(">IHH", 4 + len(out), 0, profile) + out


def event_status(cdb: Cdb, event: int, tray_open: bool, present: bool) -> bytes:
    """GET EVENT STATUS NOTIFICATION (polled only): the media class or "no event available"."""
    if not cdb.u8(1) & 0x01:
        raise CdbError(SENSE_INVALID_FIELD_IN_CDB, "asynchronous GESN")
    if not cdb.u8(4) & MEDIA_CLASS_BIT:
        return struct.pack(">HBB", 2, 0x80, MEDIA_CLASS_BIT)  # NEA: no class we support asked
    status = (MEDIA_STATUS_DOOR_OPEN if tray_open else 0) | (
        MEDIA_STATUS_MEDIA_PRESENT if present else 0
    )
    return struct.pack(">HBB", 6, NOTIFICATION_CLASS_MEDIA, MEDIA_CLASS_BIT) + bytes(
        [event, status, 0, 0]
    )


def disc_information(cdb: Cdb) -> bytes:
    """READ DISC INFORMATION, standard type: one complete session of one track."""
    if cdb.u8(1) & 0x07:
        raise CdbError(SENSE_INVALID_FIELD_IN_CDB, "disc information data type")
    data = bytearray(34)
    data[0:2] = struct.pack(">H", 32)
    data[2] = 0x0E  # last session complete, disc complete
    data[3:7] = bytes([1, 1, 1, 1])  # first track, sessions, first/last track of last session
    data[7] = 0x20  # URU: unrestricted use
    data[8] = 0x00  # CD-DA or CD-ROM
    data[16:24] = b"\xff" * 8  # no next session: lead-in and lead-out starts unused
    return bytes(data)


def capabilities_page(locked: bool) -> bytes:
    """Mode page 0x2A (MMC-3 §5.5.10): reads CD-R/RW, DVD-ROM/R/RAM; tray, eject, lock."""
    page = bytearray(22)
    page[0], page[1] = MODE_PAGE_CAPABILITIES, 20
    page[2] = 0x3B
    page[4] = 0x71  # audio play, mode 2 form 1 and 2, multi-session
    page[5] = 0x00
    page[6] = 0x29 | (0x02 if locked else 0)  # tray, eject, lock (+ locked state)
    struct.pack_into(">HHHH", page, 8, 706, 0, 2048, 706)  # max speed, -, buffer, speed
    return bytes(page)


def error_recovery_page() -> bytes:
    return bytes([MODE_PAGE_ERROR_RECOVERY, 10]) + bytes(10)

"""The MMC CD-ROM model: commands, media change, tray lock, sense, state."""

from __future__ import annotations

import struct

import pytest
from scsi_fakes import MemDisk, cdb10, iso, run, sense_of

from kvmlite.devices.scsi import CHECK_CONDITION, GOOD, CdromState, ScsiCdrom, TrayLocked, mmc
from kvmlite.devices.scsi import cdb as op
from kvmlite.errors import StateError
from kvmlite.state import dumps, loads

TUR = bytes(6)
NOT_READY_CLOSED = (0x2, 0x3A, 0x01)
NOT_READY_OPEN = (0x2, 0x3A, 0x02)
UA_CHANGED = (0x6, 0x28, 0x00)
UA_REMOVED = (0x6, 0x3A, 0x00)


def inquiry(evpd: int = 0, page: int = 0, alloc: int = 255) -> bytes:
    return struct.pack(">BBBHB", op.INQUIRY, evpd, page, alloc, 0)


def gesn(classes: int = mmc.MEDIA_CLASS_BIT, polled: int = 1) -> bytes:
    return struct.pack(
        ">BBBBBBBHB", op.GET_EVENT_STATUS_NOTIFICATION, polled, 0, 0, classes, 0, 0, 8, 0
    )


def start_stop(byte4: int) -> bytes:
    return bytes([op.START_STOP_UNIT, 0, 0, 0, byte4, 0])


def prevent(on: bool) -> bytes:
    return bytes([op.PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, int(on), 0])


def toc(
    fmt: int = 0, msf: bool = False, track: int = 0, alloc: int = 1024, byte9: int = 0
) -> bytes:
    return struct.pack(
        ">BBBBBBBHB", op.READ_TOC_PMA_ATIP, 2 if msf else 0, fmt, 0, 0, 0, track, alloc, byte9
    )


def test_inquiry_standard_and_vpd() -> None:
    cd = ScsiCdrom(iso(16), serial="CD-1")
    r, data = run(cd, inquiry())
    assert r.status == GOOD and len(data) == 36
    assert data[0] == 0x05 and data[1] == 0x80  # CD/DVD device, removable
    assert data[8:16] == b"KVMLITE " and data[16:32].rstrip() == b"KVMLITE CD-ROM"
    r, data = run(cd, inquiry(alloc=5))
    assert r.data_len == 5
    r, data = run(cd, inquiry(1, 0x00))
    assert data[:4] == bytes([5, 0, 0, 3]) and data[4:] == bytes([0x00, 0x80, 0x83])
    r, data = run(cd, inquiry(1, 0x80))
    assert data[4:] == b"CD-1"
    r, data = run(cd, inquiry(1, 0x83))
    assert data[4:8] == bytes([2, 1, 0, len(data) - 8]) and data[8:16] == b"KVMLITE "
    for bad in (inquiry(1, 0x55), inquiry(0, 0x80), bytes([op.INQUIRY, 2, 0, 0, 36, 0])):
        r, _ = run(cd, bad)
        assert r.status == CHECK_CONDITION and sense_of(r) == (0x5, 0x24, 0x00)


def test_ready_capacity_and_read() -> None:
    cd = ScsiCdrom(iso(100))
    assert run(cd, TUR)[0].status == GOOD
    r, data = run(cd, cdb10(op.READ_CAPACITY_10))
    assert struct.unpack(">II", data) == (99, 2048)
    r, data = run(cd, cdb10(op.READ_10, 7, 3), in_len=3 * 2048)
    assert r.status == GOOD and r.data_len == 3 * 2048
    assert [struct.unpack_from(">I", data, i * 2048)[0] for i in range(3)] == [7, 8, 9]
    read12 = struct.pack(">BBIIBB", op.READ_12, 0, 99, 1, 0, 0)
    r, data = run(cd, read12, in_len=2048)
    assert r.status == GOOD and data[:4] == struct.pack(">I", 99)
    assert run(cd, cdb10(op.READ_10, 5, 0), in_len=0)[0].status == GOOD


def test_read_errors_are_check_conditions() -> None:
    cd = ScsiCdrom(iso(100))
    r, _ = run(cd, cdb10(op.READ_10, 99, 2), in_len=4096)
    assert sense_of(r) == (0x5, 0x21, 0x00)
    r, _ = run(cd, cdb10(op.READ_10, 0, 4), in_len=4096)  # buffer for 2 blocks, 4 asked
    assert r.status == CHECK_CONDITION and r.overrun and sense_of(r) == (0x5, 0x24, 0x00)
    r, _ = run(cd, cdb10(op.WRITE_10, 0, 1), out=bytes(2048))
    assert sense_of(r) == (0x5, 0x20, 0x00)  # a CD-ROM has no WRITE
    bad = iso(4)
    bad.fail = True
    r, _ = run(ScsiCdrom(bad), cdb10(op.READ_10, 0, 1))
    assert sense_of(r) == (0x3, 0x11, 0x00)


@pytest.mark.parametrize(
    "cdb", [b"", b"\x28\x00\x00", bytes([0x7F] + [0] * 9), bytes([0xC0] + [0] * 15), b"\xff"]
)
def test_malformed_cdbs(cdb: bytes) -> None:
    r, _ = run(ScsiCdrom(iso(4)), cdb)
    assert r.status == CHECK_CONDITION and sense_of(r)[0] == 0x5


def test_empty_drive_is_not_ready() -> None:
    cd = ScsiCdrom(None)
    for cdb in (TUR, cdb10(op.READ_CAPACITY_10), cdb10(op.READ_10, 0, 1), toc()):
        r, _ = run(cd, cdb)
        assert sense_of(r) == NOT_READY_CLOSED
    r, data = run(cd, bytes([op.REQUEST_SENSE, 0, 0, 0, 18, 0]))
    assert r.status == GOOD and (data[2], data[12], data[13]) == NOT_READY_CLOSED
    assert run(cd, inquiry())[0].status == GOOD
    r, data = run(cd, gesn())
    assert data[4:6] == bytes([mmc.MEDIA_EVENT_NO_CHANGE, 0])


def test_toc_formats() -> None:
    cd = ScsiCdrom(iso(1000))
    r, data = run(cd, toc())
    assert data == bytes.fromhex("0012010100140100 000000000014aa00 000003e8")
    r, data = run(cd, toc(msf=True))
    # lead-out 1000 + 150 frames = 00:15:25
    assert data[4:12] == bytes.fromhex("0014010000000200") and data[16:20] == bytes([0, 0, 15, 25])
    r, data = run(cd, toc(track=0xAA))
    assert data[:2] == b"\x00\x0a" and data[6] == 0xAA
    assert sense_of(run(cd, toc(track=2))[0]) == (0x5, 0x24, 0x00)
    r, data = run(cd, toc(fmt=1))
    assert data == bytes.fromhex("000a010100140100 00000000")
    r, old = run(cd, toc(byte9=0x40))  # Linux sr's multisession query
    assert old == data
    r, data = run(cd, toc(fmt=2))
    assert r.status == GOOD and len(data) == 4 + 4 * 11 and data[7] == 0xA0
    assert sense_of(run(cd, toc(fmt=5))[0]) == (0x5, 0x24, 0x00)
    r, data = run(cd, toc(alloc=4))
    assert data == bytes.fromhex("00120101")


def test_get_configuration_profiles() -> None:
    def config(cd: ScsiCdrom, rt: int = 0, start: int = 0) -> bytes:
        cdb = struct.pack(">BBHBBBHB", op.GET_CONFIGURATION, rt, start, 0, 0, 0, 1024, 0)
        r, data = run(cd, cdb)
        assert r.status == GOOD
        assert struct.unpack(">I", data[:4])[0] == len(data) - 4
        return data

    assert struct.unpack(">H", config(ScsiCdrom(iso(10)))[6:8])[0] == mmc.PROFILE_CD_ROM
    dvd = ScsiCdrom(MemDisk((mmc.CD_MAX_BLOCKS + 1) * 2048, read_only=True))
    assert struct.unpack(">H", config(dvd)[6:8])[0] == mmc.PROFILE_DVD_ROM
    assert struct.unpack(">H", config(ScsiCdrom(None))[6:8])[0] == mmc.PROFILE_NONE
    one = config(ScsiCdrom(iso(10)), rt=2, start=mmc.FEATURE_REMOVABLE_MEDIUM)
    assert struct.unpack(">H", one[8:10])[0] == 3 and len(one) == 8 + 8
    current = config(ScsiCdrom(iso(10)), rt=1)
    codes = []
    pos = 8
    while pos < len(current):
        codes.append(struct.unpack(">H", current[pos : pos + 2])[0])
        pos += 4 + current[pos + 3]
    assert codes == [0, 1, 2, 3, 0x10, 0x1E]  # no DVD Read: not current for a CD
    bad = struct.pack(">BBHBBBHB", op.GET_CONFIGURATION, 3, 0, 0, 0, 0, 8, 0)
    assert sense_of(run(ScsiCdrom(None), bad)[0]) == (0x5, 0x24, 0x00)


def test_media_change_events_and_unit_attention() -> None:
    cd = ScsiCdrom(None)
    first = iso(10)
    assert cd.insert(first) is None
    r, data = run(cd, gesn())  # GESN is exempt from the unit attention
    assert data == bytes([0, 6, 4, 0x10, mmc.MEDIA_EVENT_NEW_MEDIA, 0x02, 0, 0])
    assert run(cd, gesn())[1][4] == mmc.MEDIA_EVENT_NO_CHANGE
    r, _ = run(cd, TUR)
    assert sense_of(r) == UA_CHANGED
    assert run(cd, TUR)[0].status == GOOD
    second = iso(20)
    assert cd.insert(second) is first
    r, data = run(cd, bytes([op.REQUEST_SENSE, 0, 0, 0, 18, 0]))  # reports and clears the UA
    assert (data[2], data[12], data[13]) == UA_CHANGED
    assert struct.unpack(">I", run(cd, cdb10(op.READ_CAPACITY_10))[1][:4])[0] == 19
    assert cd.eject() is second and cd.medium is None and cd.tray_open
    assert run(cd, gesn())[1][4:6] == bytes([mmc.MEDIA_EVENT_MEDIA_REMOVAL, 0x01])
    assert sense_of(run(cd, TUR)[0]) == UA_REMOVED
    assert sense_of(run(cd, TUR)[0]) == NOT_READY_OPEN
    assert cd.eject() is None


def test_locked_tray_refuses_eject() -> None:
    medium = iso(10)
    cd = ScsiCdrom(medium)
    assert run(cd, prevent(True))[0].status == GOOD and cd.locked
    r, data = run(cd, bytes([op.MODE_SENSE_10, 0, 0x2A, 0, 0, 0, 0, 0, 64, 0]))
    assert data[8] == 0x2A and data[8 + 6] & 0x03 == 0x03  # lock supported, locked
    r, _ = run(cd, start_stop(0x02))  # guest eject
    assert sense_of(r) == (0x5, 0x53, 0x02) and not cd.tray_open
    with pytest.raises(TrayLocked, match="locked"):
        cd.eject()
    with pytest.raises(TrayLocked):
        cd.insert(iso(2))
    assert cd.medium is medium
    assert run(cd, gesn())[1][4] == mmc.MEDIA_EVENT_EJECT_REQUEST
    assert cd.eject(force=True) is medium and not cd.locked


def test_guest_eject_and_load_keep_the_medium() -> None:
    medium = iso(10)
    cd = ScsiCdrom(medium)
    assert run(cd, start_stop(0x02))[0].status == GOOD and cd.tray_open
    assert sense_of(run(cd, TUR)[0]) == NOT_READY_OPEN
    assert run(cd, start_stop(0x03))[0].status == GOOD and not cd.tray_open
    assert cd.medium is medium
    assert run(cd, TUR)[0].status == GOOD  # the guest moved the tray: no unit attention (QEMU)
    assert run(cd, gesn())[1][4] == mmc.MEDIA_EVENT_NEW_MEDIA
    assert run(cd, start_stop(0x01))[0].status == GOOD  # START without LOEJ: no tray move
    seen = []
    cd.unit_attention_handler = seen.append
    cd.open_tray()
    cd.close_tray()
    assert cd.medium is medium and run(cd, gesn())[1][4] == mmc.MEDIA_EVENT_NEW_MEDIA
    assert [(s.asc, s.ascq) for s in seen] == [(0x3A, 0), (0x28, 0)]
    assert sense_of(run(cd, TUR)[0]) == UA_CHANGED


def test_mode_sense() -> None:
    cd = ScsiCdrom(iso(10))
    r, data = run(cd, bytes([op.MODE_SENSE_6, 0, 0x3F, 0, 255, 0]))
    assert r.status == GOOD and data[0] == len(data) - 1 and data[3] == 0
    assert data[4] == 0x01 and data[4 + 12] == 0x2A
    r, data = run(cd, bytes([op.MODE_SENSE_10, 0, 0x2A, 0, 0, 0, 0, 0, 255, 0]))
    assert struct.unpack(">H", data[:2])[0] == len(data) - 2 and data[8:10] == b"\x2a\x14"
    r, data = run(cd, bytes([op.MODE_SENSE_6, 0, 0x40 | 0x2A, 0, 255, 0]))  # changeable
    assert not any(data[4 + 2 :])
    assert sense_of(run(cd, bytes([op.MODE_SENSE_6, 0, 0xC0 | 0x2A, 0, 255, 0]))[0]) == (
        0x5,
        0x39,
        0x00,
    )
    assert sense_of(run(cd, bytes([op.MODE_SENSE_6, 0, 0x08, 0, 255, 0]))[0]) == (0x5, 0x24, 0)


def test_disc_information() -> None:
    r, data = run(ScsiCdrom(iso(10)), bytes([op.READ_DISC_INFORMATION, 0, 0, 0, 0, 0, 0, 0, 34, 0]))
    assert r.status == GOOD and len(data) == 34 and data[2] == 0x0E and data[3:7] == b"\1\1\1\1"
    r, _ = run(ScsiCdrom(iso(10)), bytes([op.READ_DISC_INFORMATION, 1, 0, 0, 0, 0, 0, 0, 34, 0]))
    assert sense_of(r) == (0x5, 0x24, 0x00)


def test_state_round_trip() -> None:
    cd = ScsiCdrom(iso(10))
    run(cd, prevent(True))
    cd.insert(iso(12), force=True)
    state = loads(CdromState, dumps(cd.save()))
    assert state == cd.save()
    other = ScsiCdrom(iso(12))
    other.restore(state)
    assert other.save() == state
    assert sense_of(run(other, TUR)[0]) == UA_CHANGED
    with pytest.raises(StateError, match="medium"):
        ScsiCdrom(None).restore(state)

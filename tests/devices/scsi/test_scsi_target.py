"""The SCSI target: REPORT LUNS, absent LUNs, LUN addressing, state; fuzzing of the CDB path."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scsi_fakes import MemDisk, iso, sense_of

from kvmlite.devices.scsi import (
    CHECK_CONDITION,
    GOOD,
    CdbError,
    ScsiCdrom,
    ScsiDisk,
    ScsiTarget,
    ScsiTargetState,
    Sense,
    decode_lun,
    encode_lun,
    parse_cdb,
)
from kvmlite.devices.scsi import cdb as op
from kvmlite.errors import ConfigError, StateError
from kvmlite.state import dumps, loads


def target() -> ScsiTarget:
    return ScsiTarget({0: ScsiCdrom(iso(8)), 1: ScsiDisk(MemDisk(1 << 16)), 300: ScsiCdrom(None)})


def tgt_run(t: ScsiTarget, lun: int | None, cdb: bytes, in_len: int = 512) -> tuple:
    buf = bytearray(in_len)
    r = t.execute(lun, cdb, [memoryview(buf)])
    return r, bytes(buf[: r.data_len])


def report_luns(alloc: int = 256) -> bytes:
    return struct.pack(">BBBBBBIBB", op.REPORT_LUNS, 0, 0, 0, 0, 0, alloc, 0, 0)


def test_report_luns_from_any_lun() -> None:
    t = target()
    for lun in (0, 5, None):
        r, data = tgt_run(t, lun, report_luns())
        assert r.status == GOOD
        assert data == struct.pack(">II", 24, 0) + encode_lun(0) + encode_lun(1) + encode_lun(300)
    assert sense_of(tgt_run(t, 0, report_luns(8))[0]) == (0x5, 0x24, 0)
    r, data = tgt_run(t, 0, report_luns(16))
    assert len(data) == 16 and data[:4] == struct.pack(">I", 24)


def test_absent_lun() -> None:
    t = target()
    r, data = tgt_run(t, 7, bytes([op.INQUIRY, 0, 0, 0, 36, 0]))
    assert r.status == GOOD and data[0] == 0x7F and len(data) == 36
    r, data = tgt_run(t, 7, bytes([op.REQUEST_SENSE, 0, 0, 0, 18, 0]))
    assert r.status == GOOD and (data[2], data[12]) == (0x5, 0x25)
    r, _ = tgt_run(t, None, bytes(6))
    assert r.status == CHECK_CONDITION and sense_of(r) == (0x5, 0x25, 0)
    assert tgt_run(t, 1, bytes(6))[0].status == GOOD
    assert sense_of(tgt_run(t, 300, bytes(6))[0]) == (0x2, 0x3A, 0x01)
    with pytest.raises(ConfigError, match="LUN"):
        ScsiTarget({16384: ScsiDisk(MemDisk(512))})


def test_lun_addressing() -> None:
    for n in (0, 1, 255, 256, 16383):
        assert decode_lun(encode_lun(n)[:2]) == n
    assert decode_lun(b"\x40\x05") == 5  # flat space for a small LUN, as Linux sends it
    assert decode_lun(b"\x80\x00") is None and decode_lun(b"\x01\x00") is None
    assert decode_lun(b"\x00") is None


def test_target_state_round_trip() -> None:
    t = target()
    cd = t.luns[0]
    assert isinstance(cd, ScsiCdrom)
    cd.eject()
    state = loads(ScsiTargetState, dumps(t.save()))
    t2 = ScsiTarget({0: ScsiCdrom(None), 1: ScsiDisk(MemDisk(1 << 16)), 300: ScsiCdrom(None)})
    t2.restore(state)
    assert t2.save() == state
    with pytest.raises(StateError, match="LUNs"):
        ScsiTarget({0: ScsiCdrom(None)}).restore(state)
    with pytest.raises(StateError, match="CD-ROM"):
        swapped = ScsiTarget(
            {0: ScsiDisk(MemDisk(512)), 1: ScsiDisk(MemDisk(512)), 300: ScsiCdrom(None)}
        )
        swapped.restore(state)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40))
def test_fuzz_parse_cdb(cdb: bytes) -> None:
    try:
        parsed = parse_cdb(cdb)
    except CdbError as e:
        assert e.sense.key == 0x5
        return
    assert parsed.opcode == cdb[0] and len(parsed.raw) in (6, 10, 12, 16)


OPCODES = [
    0x00, 0x03, 0x08, 0x0A, 0x12, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2A, 0x2F, 0x35, 0x41, 0x42,
    0x43, 0x46, 0x4A, 0x51, 0x5A, 0x88, 0x8A, 0x8F, 0x91, 0x93, 0x9E, 0xA0, 0xA8, 0xAA, 0xBB,
]  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(
    lun=st.sampled_from([0, 1, 2, 300, None]),
    opcode=st.sampled_from(OPCODES) | st.integers(0, 255),
    rest=st.binary(max_size=31),
    in_len=st.integers(0, 9000),
    out=st.binary(max_size=1100),
)
def test_fuzz_target_execute(
    lun: int | None, opcode: int, rest: bytes, in_len: int, out: bytes
) -> None:
    t = target()
    buf = bytearray(in_len)
    r = t.execute(lun, bytes([opcode]) + rest, [memoryview(buf)] if in_len else [], [out])
    assert r.status in (GOOD, CHECK_CONDITION)
    assert 0 <= r.data_len <= in_len
    if r.status == CHECK_CONDITION:
        assert Sense.parse(r.sense).key in (0x2, 0x3, 0x5, 0x6, 0x7)

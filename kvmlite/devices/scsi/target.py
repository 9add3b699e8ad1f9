"""A SCSI target: logical units by number, REPORT LUNS and absent LUNs (SAM-5 §4.6, SPC-4 §6.33).

A command for a LUN the target does not have is answered as SPC-4 asks
(and as QEMU does): INQUIRY returns peripheral qualifier 3 ("no unit
here"), REQUEST SENSE returns LOGICAL UNIT NOT SUPPORTED sense data, and
any other command ends in CHECK CONDITION with that sense. REPORT LUNS
works whichever LUN it is sent to. LUN numbers use SAM-5's single-level
structure (§4.6.7): peripheral addressing below 256, flat space up to 16383.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kvmlite.devices.scsi import cdb as op
from kvmlite.devices.scsi.cdb import CdbError, parse_cdb
from kvmlite.devices.scsi.cdrom import CdromState, ScsiCdrom
from kvmlite.devices.scsi.disk import ScsiDisk
from kvmlite.devices.scsi.lun import (
    TYPE_NO_LUN,
    LunState,
    ScsiLun,
    ScsiResult,
    check_condition,
    scatter,
)
from kvmlite.devices.scsi.sense import (
    GOOD,
    SENSE_INVALID_FIELD_IN_CDB,
    SENSE_LUN_NOT_SUPPORTED,
)
from kvmlite.errors import ConfigError, StateError

MAX_LUN = 16383


def encode_lun(lun: int) -> bytes:
    """The 8-byte single-level LUN of ``lun`` as REPORT LUNS lists it."""
    if lun < 256:
        return bytes([0, lun]) + bytes(6)
    return bytes([0x40 | lun >> 8, lun & 0xFF]) + bytes(6)


def decode_lun(first_level: bytes) -> int | None:
    """LUN number of a 2-byte first-level address (peripheral or flat), None otherwise."""
    if len(first_level) < 2:
        return None
    method = first_level[0] >> 6
    if method == 0 and first_level[0] == 0:
        return first_level[1]
    if method == 1:
        return (first_level[0] & 0x3F) << 8 | first_level[1]
    return None


@dataclass(frozen=True)
class ScsiTargetState:
    cdroms: dict[int, CdromState]
    disks: dict[int, LunState]


class ScsiTarget:
    """One target holding LUNs 0..16383; ``execute`` routes a command to one."""

    def __init__(self, luns: Mapping[int, ScsiLun]) -> None:
        for n in luns:
            if not 0 <= n <= MAX_LUN:
                raise ConfigError(f"SCSI LUN {n} is outside 0..{MAX_LUN}")
        self.luns = dict(sorted(luns.items()))

    def execute(
        self,
        lun: int | None,
        cdb: bytes,
        data_in: Sequence[memoryview] = (),
        data_out: Sequence[memoryview | bytes] = (),
        *,
        nowait: bool = False,
    ) -> ScsiResult | None:
        """Run ``cdb`` on ``lun`` (None: an address this target cannot decode).

        ``nowait``: see ``ScsiLun.execute`` (None: retry it blocking)."""
        unit = self.luns.get(lun) if lun is not None else None
        opcode = cdb[0] if len(cdb) else None
        if opcode == op.REPORT_LUNS:
            return self._report_luns(cdb, data_in)
        if unit is not None:
            return unit.execute(cdb, data_in, data_out, nowait=nowait)
        if opcode == op.INQUIRY:
            try:
                parsed = parse_cdb(cdb)
            except CdbError as e:
                return check_condition(e.sense)
            data = bytes([TYPE_NO_LUN]) + bytes(35)
            return ScsiResult(GOOD, data_len=scatter(data_in, data[: parsed.u16(3)]))
        if opcode == op.REQUEST_SENSE and len(cdb) >= 6:
            data = SENSE_LUN_NOT_SUPPORTED.fixed()[: cdb[4]]
            return ScsiResult(GOOD, data_len=scatter(data_in, data))
        return check_condition(SENSE_LUN_NOT_SUPPORTED)

    def _report_luns(self, cdb: bytes, data_in: Sequence[memoryview]) -> ScsiResult:
        try:
            parsed = parse_cdb(cdb)
        except CdbError as e:
            return check_condition(e.sense)
        if parsed.u8(2) > 2 or parsed.u32(6) < 16:
            return check_condition(SENSE_INVALID_FIELD_IN_CDB)
        body = b"".join(encode_lun(n) for n in self.luns)
        data = struct.pack(">II", len(body), 0) + body
        return ScsiResult(GOOD, data_len=scatter(data_in, data[: parsed.u32(6)]))

    # -- state ----------------------------------------------------------------------------

    def save(self) -> ScsiTargetState:
        cdroms = {n: u.save() for n, u in self.luns.items() if isinstance(u, ScsiCdrom)}
        disks = {n: u.save() for n, u in self.luns.items() if isinstance(u, ScsiDisk)}
        return ScsiTargetState(cdroms, disks)

    def restore(self, state: ScsiTargetState) -> None:
        mine = {n for n, u in self.luns.items() if isinstance(u, ScsiCdrom | ScsiDisk)}
        if set(state.cdroms) | set(state.disks) != mine or set(state.cdroms) & set(state.disks):
            raise StateError(
                f"SCSI target: the snapshot has LUNs {sorted(state.cdroms)} (cd) and"
                f" {sorted(state.disks)} (disk), this one {sorted(mine)}"
            )
        for n, s in state.cdroms.items():
            unit = self.luns[n]
            if not isinstance(unit, ScsiCdrom):
                raise StateError(f"SCSI LUN {n}: the snapshot has a CD-ROM there, not a disk")
            unit.restore(s)
        for n, d in state.disks.items():
            disk = self.luns[n]
            if not isinstance(disk, ScsiDisk):
                raise StateError(f"SCSI LUN {n}: the snapshot has a disk there, not a CD-ROM")
            disk.restore(d)

"""qcow2 internal snapshot table (qcow2.txt, "Snapshots").

Snapshots are listed and readable here; creating them belongs to the snapshot
issue. Each entry: L1 table offset and size, id and name strings, date, VM
clock, VM state size, and (version 3) extra data with the disk size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kvmlite.backends.block.qcow2.hostfile import HostFile
from kvmlite.errors import ImageError

_ENTRY = struct.Struct(">QIHHIIQII")
MAX_EXTRA = 1024
MAX_TABLE_BYTES = 64 << 20  # QEMU's QCOW_MAX_SNAPSHOTS_SIZE


@dataclass(frozen=True)
class Snapshot:
    id: str
    name: str
    l1_table_offset: int
    l1_size: int
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    vm_state_size: int
    disk_size: int | None
    icount: int | None


def read_snapshots(
    f: HostFile, offset: int, count: int, cluster_size: int
) -> tuple[list[Snapshot], int]:
    """Parse ``count`` entries at ``offset``; return them and the table's byte length."""
    snaps: list[Snapshot] = []
    pos = offset
    for i in range(count):
        raw = f.pread(pos, _ENTRY.size, f"snapshot entry {i}")
        (l1_off, l1_size, id_len, name_len, dsec, dnsec, clock, vmsz, extra_len) = _ENTRY.unpack(
            raw
        )
        if extra_len > MAX_EXTRA:
            raise ImageError(f"{f.name}: snapshot {i} has {extra_len} bytes of extra data")
        extra = f.pread(pos + _ENTRY.size, extra_len, f"snapshot {i} extra data")
        disk_size = icount = None
        if extra_len >= 8:
            vmsz = max(vmsz, struct.unpack_from(">Q", extra, 0)[0])
        if extra_len >= 16:
            disk_size = struct.unpack_from(">Q", extra, 8)[0]
        if extra_len >= 24:
            icount = struct.unpack_from(">q", extra, 16)[0]
        p = pos + _ENTRY.size + extra_len
        sid = f.pread(p, id_len, f"snapshot {i} id").decode("utf-8", "replace")
        name = f.pread(p + id_len, name_len, f"snapshot {i} name").decode("utf-8", "replace")
        pos = (p + id_len + name_len + 7) & ~7
        if pos - offset > MAX_TABLE_BYTES:
            raise ImageError(f"{f.name}: snapshot table is too large")
        if l1_off % cluster_size or l1_size * 8 > (32 << 20):
            raise ImageError(f"{f.name}: snapshot {sid!r} has an invalid L1 table")
        snaps.append(
            Snapshot(sid, name, l1_off, l1_size, dsec, dnsec, clock, vmsz, disk_size, icount)
        )
    return snaps, pos - offset

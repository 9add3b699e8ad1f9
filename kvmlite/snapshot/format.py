"""The snapshot state file: a header, then the state serialised (kvmlite/state.py).

Layout (little-endian)::

    offset  size  field
    0       8     magic b"KVMLSNAP"
    8       4     format version (FORMAT_VERSION)
    12      4     flags (0)
    16      8     payload length in bytes
    24      32    SHA-256 of the payload
    56      n     payload: JSON of a ``SnapshotFile`` (no code, no pickle)

A file with another magic, another version, a short payload or a wrong
checksum is refused with ``SnapshotError`` naming what is wrong, before
anything is built. The memory file is not checksummed: hashing it would make
a restore cost grow with guest RAM (its size is checked instead).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from kvmlite.errors import KvmliteError, StateError
from kvmlite.state import dumps, loads
from kvmlite.vmm.persist import MachineState

MAGIC = b"KVMLSNAP"
#: Bumped on every change to MachineState or to a device's State.
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIQ32s")
#: A state file is a few hundred KiB; refuse to read a huge one into memory.
MAX_PAYLOAD = 64 << 20


class SnapshotError(KvmliteError):
    """A snapshot that cannot be written or restored; nothing was changed."""


@dataclass(frozen=True)
class DiskInfo:
    """A drive's image as it was at snapshot time."""

    path: str
    #: Bytes of the image file for raw images (a restore refuses another size), else None.
    raw_size: int | None


@dataclass(frozen=True)
class SnapshotFile:
    #: VmConfig.to_json() of the machine the snapshot was taken from.
    config: str
    machine: MachineState
    disks: tuple[DiskInfo, ...]
    #: Bytes of guest RAM, i.e. of the memory file.
    memory_size: int


def encode(snapshot: SnapshotFile) -> bytes:
    payload = dumps(snapshot)
    digest = hashlib.sha256(payload).digest()
    return HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(payload), digest) + payload


def decode(data: bytes, where: str = "state file") -> SnapshotFile:
    if len(data) < HEADER.size:
        raise SnapshotError(f"{where}: {len(data)} bytes, too short for a kvmlite snapshot")
    magic, version, flags, length, digest = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotError(f"{where}: not a kvmlite snapshot (magic {magic!r})")
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"{where}: snapshot format version {version}, this kvmlite reads version"
            f" {FORMAT_VERSION} only: restore it with the kvmlite that took it"
        )
    if flags != 0:
        raise SnapshotError(f"{where}: unknown flags {flags:#x}")
    payload = data[HEADER.size :]
    if length > MAX_PAYLOAD or len(payload) != length:
        raise SnapshotError(
            f"{where}: payload of {len(payload)} bytes, the header says {length}"
            " (truncated or corrupted)"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise SnapshotError(f"{where}: checksum mismatch (the file is corrupted)")
    try:
        return loads(SnapshotFile, payload)
    except StateError as e:
        raise SnapshotError(f"{where}: {e}") from None
    except RecursionError:
        raise SnapshotError(f"{where}: the state is nested too deeply") from None

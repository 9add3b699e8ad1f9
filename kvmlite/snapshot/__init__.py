"""Snapshots: a paused machine saved to a directory, and restored from one.

``state`` (kvmlite/snapshot/format.py) holds the configuration, the machine
state and the disks' sizes; ``memory`` holds guest RAM (kvmlite/snapshot/memory.py).
docs/snapshot.md describes the format and its guarantees.
"""

from kvmlite.snapshot.snapshot import (
    MEMORY_FILE,
    STATE_FILE,
    Snapshot,
    SnapshotPaths,
    read_snapshot,
    restore_snapshot,
    write_snapshot,
)

__all__ = [
    "MEMORY_FILE",
    "STATE_FILE",
    "Snapshot",
    "SnapshotPaths",
    "read_snapshot",
    "restore_snapshot",
    "write_snapshot",
]

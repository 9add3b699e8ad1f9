"""Write a paused machine to a snapshot directory; build a machine from one.

A snapshot is two files, by default ``state`` and ``memory`` in one
directory (``SnapshotPaths``): ``state`` (kvmlite/snapshot/format.py:
the config, the machine state, the disks' sizes) and ``memory`` (guest RAM,
kvmlite/snapshot/memory.py). Both are written under temporary names and
renamed into place at the end, so a failed snapshot leaves an older one in
the same directory as it was.

A restore reads and checks everything it can before it builds anything: the
state file's header and checksum, the config, the memory file's size, each
raw disk's size. Then ``assemble`` builds the machine from the saved config
on the memory file mapped privately, and ``builder.restore`` applies the
state in the order kvmlite/vmm/persist.py writes down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kvmlite.config import CharConfig, ImageFormat, VmConfig
from kvmlite.errors import ConfigError, StateError
from kvmlite.memory import GuestMemory
from kvmlite.snapshot.format import (
    MAX_PAYLOAD,
    DiskInfo,
    SnapshotError,
    SnapshotFile,
    decode,
    encode,
)
from kvmlite.snapshot.memory import write_memory
from kvmlite.vmm.machine import Machine, RunState
from kvmlite.vmm.persist import save_machine

if TYPE_CHECKING:
    from kvmlite.backends.char.base import CharBackend
    from kvmlite.eventloop import EventLoop

STATE_FILE = "state"
MEMORY_FILE = "memory"


@dataclass(frozen=True)
class SnapshotPaths:
    """Where a snapshot's two files are: a directory's ``state`` and ``memory``
    (``in_dir``), or any two paths (Firecracker's ``snapshot_path`` and
    ``mem_file_path``)."""

    state: Path
    memory: Path

    @classmethod
    def of(cls, where: Path | str | SnapshotPaths) -> SnapshotPaths:
        if isinstance(where, SnapshotPaths):
            return where
        return cls(Path(where) / STATE_FILE, Path(where) / MEMORY_FILE)


@dataclass(frozen=True)
class Snapshot:
    """A snapshot read and checked (``read_snapshot``), not restored yet."""

    paths: SnapshotPaths
    file: SnapshotFile
    config: VmConfig


def _is_qcow2(path: Path, format: ImageFormat | None) -> bool:
    if format is not None:
        return format is ImageFormat.QCOW2
    with open(path, "rb") as f:
        return f.read(4) == b"QFI\xfb"  # qcow2's magic (docs/interop/qcow2.txt)


def _disks(config: VmConfig) -> tuple[DiskInfo, ...]:
    """Each drive's path, and for a raw image its size (a qcow2 file grows as
    it is written, so only a raw image's size says it was changed)."""
    return tuple(
        DiskInfo(str(d.path), None if _is_qcow2(d.path, d.format) else os.stat(d.path).st_size)
        for d in config.drives
    )


def _flush_disks(machine: Machine) -> None:
    from kvmlite.devices.virtio.blk import VirtioBlock  # noqa: PLC0415

    for entry in machine.devices.of_type(VirtioBlock):
        with entry.locked():
            entry.model.backend.flush()


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_snapshot(
    machine: Machine,
    where: Path | str | SnapshotPaths,
    *,
    progress: Callable[[int], None] | None = None,
) -> Snapshot:
    """Save a paused (or not started) machine to ``where`` (a directory, or
    SnapshotPaths); ``progress(n)`` as the memory file is written (n bytes of
    guest RAM at a time)."""
    if machine.state is RunState.RUNNING:
        raise SnapshotError("cannot snapshot a running VM: pause it first")
    paths = SnapshotPaths.of(where)
    try:
        for parent in {paths.state.parent, paths.memory.parent}:
            parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SnapshotError(f"cannot make the snapshot's directory: {e}") from e
    _flush_disks(machine)
    try:
        state = save_machine(machine)
    except StateError as e:
        raise SnapshotError(str(e)) from None
    config = machine.config
    file = SnapshotFile(config.to_json(), state, _disks(config), machine.memory.size)
    blob = encode(file)
    tmp_state, tmp_memory = _tmp(paths.state), _tmp(paths.memory)
    try:
        fd = os.open(tmp_memory, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_memory(machine.memory, fd, progress)
            os.fsync(fd)
        finally:
            os.close(fd)
        with open(tmp_state, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_memory, paths.memory)
        os.replace(tmp_state, paths.state)
    except OSError as e:
        for tmp in (tmp_state, tmp_memory):
            with contextlib.suppress(OSError):
                if not tmp.is_dir():
                    tmp.unlink()
        raise SnapshotError(f"cannot write the snapshot to {paths.state.parent}: {e}") from e
    return Snapshot(paths, file, config)


def read_snapshot(where: Path | str | SnapshotPaths) -> Snapshot:
    """Read and check a snapshot (header, checksum, config, memory file and disk
    sizes) without building anything; ``SnapshotError`` says what is wrong."""
    paths = SnapshotPaths.of(where)
    path = paths.state
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PAYLOAD + 4096)
    except OSError as e:
        raise SnapshotError(f"cannot read snapshot {path}: {e.strerror}") from None
    file = decode(data, str(path))
    try:
        config = VmConfig.from_json(file.config)
    except ConfigError as e:
        raise SnapshotError(f"{path}: the saved configuration is bad: {e}") from None
    if config.machine.memory != file.memory_size or file.machine.memory_size != file.memory_size:
        raise SnapshotError(f"{path}: memory sizes in the snapshot disagree")
    memory = paths.memory
    try:
        size = memory.stat().st_size
    except OSError as e:
        raise SnapshotError(f"cannot read memory file {memory}: {e.strerror}") from None
    if size != file.memory_size:
        raise SnapshotError(
            f"memory file {memory} has {size} bytes, the snapshot's guest has"
            f" {file.memory_size}: it belongs to another snapshot or was truncated"
        )
    for disk in file.disks:
        _check_disk(disk)
    return Snapshot(paths, file, config)


def _check_disk(disk: DiskInfo) -> None:
    try:
        size = os.stat(disk.path).st_size
    except OSError as e:
        raise SnapshotError(f"disk {disk.path} of the snapshot: {e.strerror}") from None
    if disk.raw_size is not None and size != disk.raw_size:
        raise SnapshotError(
            f"disk {disk.path} has {size} bytes, {disk.raw_size} when the snapshot was taken:"
            " restore with the disk as it was then (keep a copy or a reflink with the"
            " snapshot, see docs/snapshot.md)"
        )


def restore_snapshot(
    where: Path | str | SnapshotPaths | Snapshot,
    *,
    console: CharBackend | None = None,
    console_spec: CharConfig | None = None,
    loop: EventLoop | None = None,
    on_quit: Callable[[], None] | None = None,
) -> Machine:
    """A machine built from the snapshot's config and in its saved state, not
    started. ``console_spec`` replaces the saved console's host side (the
    guest sees the same UART either way)."""
    from kvmlite.vmm.builder import assemble, restore  # noqa: PLC0415

    snap = where if isinstance(where, Snapshot) else read_snapshot(where)
    config = snap.config
    if console_spec is not None:
        config = dataclasses.replace(config, console=console_spec)
    memory = GuestMemory.from_file(snap.paths.memory, snap.file.memory_size)
    machine = assemble(config, console=console, loop=loop, on_quit=on_quit, memory=memory)
    try:
        restore(machine, snap.file.machine)
    except StateError as e:
        machine.close()
        raise SnapshotError(f"{snap.paths.state}: {e}") from None
    except BaseException:
        machine.close()
        raise
    return machine

"""Per-VM runtime directories: where ``kvmlite ps`` finds running VMs.

Layout: ``<base>/<id>/vm.json`` plus the VM's default QMP socket
``<base>/<id>/qmp.sock``. ``<base>`` is ``$XDG_RUNTIME_DIR/kvmlite`` when
that variable is set, else ``/run/kvmlite`` for root, else
``/tmp/kvmlite-<uid>`` (made mode 0700 and refused unless the user owns
it). ``vm.json`` holds ``id``, ``pid``, ``pid_start`` (the process's start
time from /proc/<pid>/stat, so a reused pid is not taken for the VM),
``state`` (QMP status names), ``started`` (time.time()) and ``sockets``
(``qmp``, and ``api`` when the VM has a REST API socket).

Theory of operation
-------------------
``RunDir.create(id)`` refuses an id whose entry belongs to a live process
and replaces a stale one; ``write()`` replaces vm.json atomically (a
reader never sees half a file); ``remove()`` deletes the directory when
the VM ends. A VM killed with SIGKILL cannot remove its entry: ``entries()``
(what ``kvmlite ps`` calls) checks each entry's pid and start time and
removes the stale ones. An entry without a readable vm.json is a VM being
created (or a foreign directory): it is listed by nobody and left alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvmlite.errors import ConfigError

VM_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
INFO_FILE = "vm.json"
QMP_SOCKET = "qmp.sock"


def base_dir() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "kvmlite"
    if os.geteuid() == 0:
        return Path("/run/kvmlite")
    return Path(f"/tmp/kvmlite-{os.getuid()}")


def _ensure_base(base: Path) -> None:
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = base.stat()
    if st.st_uid != os.geteuid():
        raise ConfigError(f"runtime directory {base} belongs to another user")


def check_id(vm_id: str) -> str:
    if not VM_ID_RE.fullmatch(vm_id):
        raise ConfigError(
            f"VM id {vm_id!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return vm_id


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), None if no such
    process or a zombie (proc(5))."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[:1] in (["Z"], ["X"]):  # a zombie has ended; only its parent has not looked
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


#: Serialises vm.json writes between threads.
_WRITE_LOCK = threading.Lock()


@dataclass
class VmEntry:
    """One VM's vm.json."""

    id: str
    pid: int
    pid_start: int | None
    state: str
    started: float
    sockets: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "pid_start": self.pid_start,
            "state": self.state,
            "started": self.started,
            "sockets": dict(self.sockets),
        }

    @classmethod
    def from_json(cls, raw: object) -> VmEntry:
        if not isinstance(raw, dict):
            raise ValueError("vm.json is not an object")
        sockets = raw.get("sockets", {})
        if not isinstance(sockets, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in sockets.items()
        ):
            raise ValueError("vm.json 'sockets' is not an object of strings")
        pid, pid_start = raw.get("pid"), raw.get("pid_start")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise ValueError("vm.json 'pid' is not a positive integer")
        if pid_start is not None and not isinstance(pid_start, int):
            raise ValueError("vm.json 'pid_start' is not an integer")
        vm_id, state, started = raw.get("id"), raw.get("state"), raw.get("started", 0)
        if not isinstance(vm_id, str) or not isinstance(state, str):
            raise ValueError("vm.json 'id' and 'state' must be strings")
        if not isinstance(started, int | float):
            raise ValueError("vm.json 'started' is not a number")
        return cls(vm_id, pid, pid_start, state, float(started), dict(sockets))

    def alive(self) -> bool:
        start = process_start_time(self.pid)
        return start is not None and (self.pid_start is None or start == self.pid_start)


class RunDir:
    """One VM's runtime directory (see the module docstring)."""

    def __init__(self, path: Path, entry: VmEntry) -> None:
        self.path = path
        self.entry = entry

    @classmethod
    def create(cls, vm_id: str, base: Path | None = None) -> RunDir:
        check_id(vm_id)
        base = base or base_dir()
        _ensure_base(base)
        path = base / vm_id
        old = read_entry(path)
        if old is not None and old.alive():
            raise ConfigError(f"a VM with id {vm_id!r} is running already (pid {old.pid})")
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        path.mkdir(mode=0o700)
        pid = os.getpid()
        entry = VmEntry(vm_id, pid, process_start_time(pid), "prelaunch", time.time())
        rundir = cls(path, entry)
        rundir.write()
        return rundir

    @property
    def qmp_socket(self) -> Path:
        return self.path / QMP_SOCKET

    def write(self, **changes: Any) -> None:
        # Two threads may write (a state change from the loop's event, the run's
        # own start/stop): one lock, or one's rename took the other's temp file.
        with _WRITE_LOCK:
            for key, value in changes.items():
                setattr(self.entry, key, value)
            tmp = self.path / f".{INFO_FILE}.{os.getpid()}.tmp"
            try:
                tmp.write_text(json.dumps(self.entry.to_json(), indent=1) + "\n")
                tmp.replace(self.path / INFO_FILE)
            except FileNotFoundError:
                if self.path.exists():
                    raise  # else the VM ended and its directory went: nothing to record

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def read_entry(path: Path) -> VmEntry | None:
    """The entry in directory ``path``, None if it has no valid vm.json."""
    try:
        return VmEntry.from_json(json.loads((path / INFO_FILE).read_text()))
    except (OSError, ValueError):
        return None


def entries(base: Path | None = None, *, clean: bool = True) -> Iterator[tuple[Path, VmEntry]]:
    """Live VMs' entries, sorted by id; stale ones are removed when ``clean``."""
    base = base or base_dir()
    try:
        dirs = sorted(p for p in base.iterdir() if p.is_dir())
    except OSError:
        return
    for path in dirs:
        entry = read_entry(path)
        if entry is None:
            continue
        if not entry.alive():
            if clean:
                shutil.rmtree(path, ignore_errors=True)
            continue
        yield path, entry


def find(vm_id: str, base: Path | None = None) -> VmEntry:
    """A running VM's entry by id (ConfigError if there is none)."""
    check_id(vm_id)
    base = base or base_dir()
    entry = read_entry(base / vm_id)
    if entry is None or not entry.alive():
        raise ConfigError(f"no running VM with id {vm_id!r} (see kvmlite ps)")
    return entry

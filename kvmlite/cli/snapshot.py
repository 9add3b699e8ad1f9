"""``kvmlite snapshot SOCK DIR``: snapshot a running VM through its API socket.

The VM's Firecracker-compatible API socket (``kvmlite run --api-sock``)
takes the requests: ``GET /`` (its state), ``PATCH /vm`` Paused if it runs,
``PUT /snapshot/create`` with DIR/state and DIR/memory, ``PATCH /vm``
Resumed if it was running. A tqdm bar follows the memory file as the VM
writes it. docs/snapshot.md has the format and the restore side
(``kvmlite run --restore DIR``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from kvmlite.errors import ConfigError, KvmliteError
from kvmlite.snapshot.snapshot import MEMORY_FILE, STATE_FILE

#: How long the VM may take to write its snapshot (a 4 GiB guest's memory file).
SNAPSHOT_TIMEOUT_S = 600.0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "snapshot",
        help="snapshot a running VM to a directory (restore: kvmlite run --restore DIR)",
        description="Pause the VM, save it to DIR (state + memory), resume it.",
    )
    p.add_argument("vm", metavar="SOCK", help="the VM's API socket (kvmlite run --api-sock)")
    p.add_argument("directory", type=Path, metavar="DIR", help="where the snapshot goes")
    p.add_argument("--diff", action="store_true", help="only pages changed since the last one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--leave-paused", action="store_true", help="do not resume the VM after")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class ApiClient:
    """One request per connection to a Firecracker-style API socket."""

    def __init__(self, path: str) -> None:
        self.path = path

    def call(self, method: str, target: str, body: Any = None, timeout: float = 30.0) -> Any:
        conn = _UnixConnection(self.path, timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as e:
            raise KvmliteError(f"cannot talk to the API socket {self.path}: {e}") from None
        finally:
            conn.close()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        if resp.status >= 300:
            message = doc.get("fault_message") if isinstance(doc, dict) else None
            raise KvmliteError(f"{method} {target}: {message or f'HTTP {resp.status}'}")
        return doc


def _vm_socket(vm: str) -> str:
    if not os.path.exists(vm):
        raise ConfigError(
            f"{vm}: no such API socket (give the path of the VM's --api-sock; VM ids"
            " need kvmlite's runtime directories)"
        )
    return vm


def _follow(path: Path, total: int, done: threading.Event) -> None:
    """A tqdm bar for the memory file the VM writes at ``path``."""
    from tqdm import tqdm  # noqa: PLC0415

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="memory") as bar:
        while not done.wait(0.1):
            try:
                size = path.stat().st_size
            except OSError:
                continue
            bar.update(max(0, min(size, total) - bar.n))
        bar.update(total - bar.n)


def main(args: argparse.Namespace) -> int:
    if args.diff:
        raise ConfigError("diff snapshots are not supported yet: take a full one (no --diff)")
    api = ApiClient(_vm_socket(args.vm))
    info = api.call("GET", "/")
    state = info.get("state") if isinstance(info, dict) else None
    if state not in ("Running", "Paused"):
        raise KvmliteError(f"{args.vm}: the VM is {state or 'in an unknown state'}, not running")
    directory: Path = args.directory.absolute()  # the VM makes it
    total = 0
    config = api.call("GET", "/vm/config")
    if isinstance(config, dict):
        total = int(config.get("machine-config", {}).get("mem_size_mib", 0)) << 20
    paused_here = state == "Running"
    if paused_here:
        api.call("PATCH", "/vm", {"state": "Paused"})
    done = threading.Event()
    bar = None
    if total and not args.no_progress and sys.stderr.isatty():
        tmp = directory / f".{MEMORY_FILE}.tmp"
        bar = threading.Thread(target=_follow, args=(tmp, total, done), daemon=True)
        bar.start()
    try:
        body = {
            "snapshot_type": "Full",
            "snapshot_path": str(directory / STATE_FILE),
            "mem_file_path": str(directory / MEMORY_FILE),
        }
        api.call("PUT", "/snapshot/create", body, timeout=SNAPSHOT_TIMEOUT_S)
    finally:
        done.set()
        if bar is not None:
            bar.join(5)
        if paused_here and not args.leave_paused:
            api.call("PATCH", "/vm", {"state": "Resumed"})
    print(f"kvmlite: snapshot in {directory} (restore: kvmlite run --restore {directory})")
    return 0

"""Firecracker's snapshot requests as kvmlite actions (firecracker-1.17.0-dev.yaml:
``SnapshotCreateParams``, ``SnapshotLoadParams``, ``MemoryBackend``).

A REST handler for ``PUT /snapshot/create`` or ``PUT /snapshot/load`` only
calls ``create_action(body)`` / ``load_action(body)`` and submits the action;
a body the definition rejects, or asks for what kvmlite does not do yet
(Diff snapshots, the Uffd back-end, dirty-page tracking), raises ConfigError,
which is a 400 ``{"fault_message": ...}``. docs/snapshot.md has the mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvmlite.errors import ConfigError
from kvmlite.snapshot.snapshot import SnapshotPaths
from kvmlite.vmm.actions import SnapshotCreate, SnapshotLoad

CREATE_KEYS = {"snapshot_type", "snapshot_path", "mem_file_path"}
LOAD_KEYS = {
    "snapshot_path",
    "mem_file_path",
    "mem_backend",
    "enable_diff_snapshots",
    "track_dirty_pages",
    "resume_vm",
    "network_overrides",
    "vsock_override",
}


def _object(body: Any, keys: set[str], what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ConfigError(f"{what}: expected a JSON object")
    unknown = sorted(set(body) - keys)
    if unknown:
        raise ConfigError(f"{what}: unknown field {unknown[0]!r}")
    return body


def _path(body: dict[str, Any], key: str, what: str) -> Path:
    value = body.get(key)
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(f"{what}: {key} must be a non-empty path")
    return Path(value)


def _flag(body: dict[str, Any], key: str, what: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{what}: {key} must be true or false")
    return value


def create_action(body: Any) -> SnapshotCreate:
    """``PUT /snapshot/create``: ``snapshot_path`` and ``mem_file_path``, Full only."""
    what = "snapshot/create"
    doc = _object(body, CREATE_KEYS, what)
    kind = doc.get("snapshot_type", "Full")
    if kind == "Diff":
        raise ConfigError(f"{what}: diff snapshots are not supported yet: use Full")
    if kind != "Full":
        raise ConfigError(f"{what}: snapshot_type must be Full or Diff")
    state = _path(doc, "snapshot_path", what)
    memory = _path(doc, "mem_file_path", what)
    if state == memory:
        raise ConfigError(f"{what}: snapshot_path and mem_file_path must differ")
    return SnapshotCreate(SnapshotPaths(state, memory))


def load_action(body: Any) -> SnapshotLoad:
    """``PUT /snapshot/load``: the state file, a File memory back-end, resume_vm."""
    what = "snapshot/load"
    doc = _object(body, LOAD_KEYS, what)
    state = _path(doc, "snapshot_path", what)
    if ("mem_backend" in doc) == ("mem_file_path" in doc):
        raise ConfigError(f"{what}: give exactly one of mem_backend and mem_file_path")
    if "mem_backend" in doc:
        backend = _object(doc["mem_backend"], {"backend_type", "backend_path"}, what)
        if backend.get("backend_type") == "Uffd":
            raise ConfigError(f"{what}: the Uffd memory back-end is not supported: use File")
        if backend.get("backend_type") != "File":
            raise ConfigError(f"{what}: mem_backend.backend_type must be File or Uffd")
        memory = _path(backend, "backend_path", what)
    else:
        memory = _path(doc, "mem_file_path", what)
    for key in ("enable_diff_snapshots", "track_dirty_pages"):
        if _flag(doc, key, what):
            raise ConfigError(f"{what}: {key} is not supported yet (no dirty-page tracking)")
    for key in ("network_overrides", "vsock_override"):
        if doc.get(key):
            raise ConfigError(f"{what}: {key} is not supported")
    return SnapshotLoad(SnapshotPaths(state, memory), resume=_flag(doc, "resume_vm", what))

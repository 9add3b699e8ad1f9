"""kvmlite/api/rundir.py: runtime directories, stale entries, vm.json parsing."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.api import rundir
from kvmlite.api.rundir import RunDir, VmEntry, base_dir, entries, find, process_start_time
from kvmlite.errors import ConfigError


def test_base_dir_choice(monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert str(base_dir()) == "/run/user/1000/kvmlite"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert str(base_dir()) == "/run/kvmlite"
    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    monkeypatch.setattr(os, "getuid", lambda: 1234)
    assert str(base_dir()) == "/tmp/kvmlite-1234"


def test_create_write_list_remove(tmp_path):
    d = RunDir.create("vm1", tmp_path)
    assert (tmp_path / "vm1").stat().st_mode & 0o777 == 0o700
    d.write(state="running", sockets={"qmp": "unix:/x"})
    [(path, entry)] = list(entries(tmp_path))
    assert path == tmp_path / "vm1"
    assert entry.pid == os.getpid() and entry.state == "running"
    assert entry.pid_start == process_start_time(os.getpid())
    assert find("vm1", tmp_path).sockets == {"qmp": "unix:/x"}
    d.remove()
    assert list(entries(tmp_path)) == []
    with pytest.raises(ConfigError, match="no running VM"):
        find("vm1", tmp_path)


def test_duplicate_live_id_is_refused(tmp_path):
    RunDir.create("dup", tmp_path)
    with pytest.raises(ConfigError, match="running already"):
        RunDir.create("dup", tmp_path)


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_entries_are_removed_and_replaced(tmp_path):
    d = RunDir.create("gone", tmp_path)
    d.write(pid=dead_pid())
    reused = RunDir.create("reused", tmp_path)
    reused.write(pid_start=(reused.entry.pid_start or 0) + 1)  # same pid, other process
    half = tmp_path / "being-made"
    half.mkdir()  # no vm.json yet: left alone
    assert list(entries(tmp_path)) == []
    assert not (tmp_path / "gone").exists() and not (tmp_path / "reused").exists()
    assert half.exists()
    d2 = RunDir.create("gone", tmp_path)  # a stale id can be used again
    assert d2.entry.pid == os.getpid()


@pytest.mark.parametrize("bad", ["", "-x", "a/b", "..", "x" * 65, "a b", "é"])
def test_bad_ids(tmp_path, bad):
    with pytest.raises(ConfigError, match="VM id"):
        RunDir.create(bad, tmp_path)


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"id": "a", "pid": "1", "state": "running"},
        {"id": "a", "pid": 0, "state": "running"},
        {"id": "a", "pid": True, "state": "running"},
        {"id": 1, "pid": 1, "state": "running"},
        {"id": "a", "pid": 1, "state": "running", "sockets": {"qmp": 5}},
        {"id": "a", "pid": 1, "state": "running", "pid_start": "x"},
        {"id": "a", "pid": 1, "state": "running", "started": "now"},
    ],
)
def test_malformed_vm_json_is_not_an_entry(tmp_path, raw):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "vm.json").write_text(json.dumps(raw))
    assert rundir.read_entry(tmp_path / "a") is None
    assert list(entries(tmp_path)) == []
    assert (tmp_path / "a").exists()


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=10,
    )
)
def test_fuzz_vm_json(raw):
    try:
        entry = VmEntry.from_json(raw)
    except ValueError:
        return
    assert VmEntry.from_json(entry.to_json()) == entry


def test_a_zombie_is_not_alive():
    p = subprocess.Popen(["true"])
    try:
        from .vmrig import poll

        stat = f"/proc/{p.pid}/stat"
        poll("the child to become a zombie", lambda: open(stat).read().split(") ")[1][0] == "Z")
        assert process_start_time(p.pid) is None
    finally:
        p.wait()

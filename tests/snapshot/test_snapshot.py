"""Snapshot directories on /dev/kvm (kvmlite/snapshot/snapshot.py), in one process:
write, restore, and every way a snapshot or a restore is refused."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest
from vmm.counting import assert_one_count, counter_config, counts, wait_for_lines

from kvmlite.config import CharConfig, DriveConfig
from kvmlite.snapshot import (
    MEMORY_FILE,
    STATE_FILE,
    SnapshotPaths,
    restore_snapshot,
    write_snapshot,
)
from kvmlite.snapshot.format import SnapshotError
from kvmlite.vmm.builder import build_vm
from kvmlite.vmm.machine import ExitReason, Machine

pytestmark = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)

MEMORY = 32 << 20


def stop(machine: Machine) -> None:
    machine.request_exit(ExitReason.QUIT, message="test done")
    machine.wait(10)
    machine.close()


@pytest.fixture
def snapped(tmp_path: Path):
    """A counting guest paused after 3 lines and snapshotted to tmp_path/snap."""
    con = tmp_path / "a.txt"
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    config = counter_config(tmp_path, con, memory=MEMORY)
    config = dataclasses.replace(config, drives=(DriveConfig(disk),))
    machine = build_vm(config)
    machine.start()
    wait_for_lines(con, 3)
    machine.pause()
    reported: list[int] = []
    write_snapshot(machine, tmp_path / "snap", progress=reported.append)
    assert sum(reported) == MEMORY
    source = Source(machine)
    yield source, tmp_path
    source.stop()


class Source:
    """The snapshotted machine; a restore in this process stops it first, as
    the two would otherwise share the disk (its image lock refuses that)."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            stop(self.machine)


def test_restore_continues_the_count(snapped) -> None:
    a, tmp = snapped
    a.stop()
    memory = tmp / "snap" / MEMORY_FILE
    assert memory.stat().st_size == MEMORY
    assert memory.stat().st_blocks * 512 < MEMORY // 2  # untouched RAM stays a hole
    digest = hashlib.sha256(memory.read_bytes()).digest()
    con_b = tmp / "b.txt"
    b = restore_snapshot(tmp / "snap", console_spec=CharConfig.parse(f"file:{con_b}"))
    try:
        b.start()
        wait_for_lines(con_b, 3)
        b.pause()
        assert_one_count((tmp / "a.txt").read_text(), con_b.read_text())
        # The memory file was mapped privately: the guest's writes did not reach it.
        assert hashlib.sha256(memory.read_bytes()).digest() == digest
    finally:
        stop(b)


def _refused(directory: Path, match: str) -> None:
    with pytest.raises(SnapshotError, match=match):
        restore_snapshot(directory, console_spec=CharConfig.parse("null"))


def test_truncated_or_corrupted_state_is_refused(snapped) -> None:
    _, tmp = snapped
    state = tmp / "snap" / STATE_FILE
    good = state.read_bytes()
    state.write_bytes(good[: len(good) // 2])
    _refused(tmp / "snap", "truncated")
    corrupted = bytearray(good)
    corrupted[-10] ^= 0x20
    state.write_bytes(bytes(corrupted))
    _refused(tmp / "snap", "checksum")
    state.unlink()
    _refused(tmp / "snap", "cannot read")


def test_memory_file_of_the_wrong_size_is_refused(snapped) -> None:
    _, tmp = snapped
    memory = tmp / "snap" / MEMORY_FILE
    os.truncate(memory, MEMORY - 4096)
    _refused(tmp / "snap", "memory file .* has")
    os.truncate(memory, MEMORY * 2)
    _refused(tmp / "snap", "memory file .* has")


def test_changed_raw_disk_is_refused(snapped) -> None:
    _, tmp = snapped
    os.truncate(tmp / "disk.img", 2 << 20)
    _refused(tmp / "snap", "disk .* has 2097152 bytes, 1048576 when")


def test_running_vm_is_not_snapshotted_and_keeps_running(snapped) -> None:
    a, tmp = snapped
    before = {p.name: p.read_bytes() for p in (tmp / "snap").iterdir()}
    a.machine.resume()
    n = len(counts((tmp / "a.txt").read_text()))
    with pytest.raises(SnapshotError, match="running"):
        write_snapshot(a.machine, tmp / "snap")
    assert {p.name: p.read_bytes() for p in (tmp / "snap").iterdir()} == before
    assert len(wait_for_lines(tmp / "a.txt", n + 2)) >= n + 2  # still counting


def test_failed_write_leaves_the_older_snapshot(snapped) -> None:
    a, tmp = snapped
    before = {p.name: p.read_bytes() for p in (tmp / "snap").iterdir()}
    (tmp / "snap" / f".{MEMORY_FILE}.tmp").mkdir()  # the temporary file cannot be made
    with pytest.raises(SnapshotError, match="cannot write"):
        write_snapshot(a.machine, tmp / "snap")
    (tmp / "snap" / f".{MEMORY_FILE}.tmp").rmdir()
    assert {p.name: p.read_bytes() for p in (tmp / "snap").iterdir()} == before


def test_two_paths_firecracker_style(snapped) -> None:
    a, tmp = snapped
    paths = SnapshotPaths(tmp / "fc" / "vm.snap", tmp / "fc-mem" / "vm.mem")
    write_snapshot(a.machine, paths)
    a.stop()
    assert paths.memory.stat().st_size == MEMORY
    con_b = tmp / "b.txt"
    b = restore_snapshot(paths, console_spec=CharConfig.parse(f"file:{con_b}"))
    try:
        b.start()
        wait_for_lines(con_b, 2)
        b.pause()
        assert_one_count((tmp / "a.txt").read_text(), con_b.read_text())
    finally:
        stop(b)


def test_a_restored_machine_snapshots_again(snapped) -> None:
    """Its RAM is a private file mapping (no memfd): the memory file is written
    from the mapping, and the second snapshot goes on from the first."""
    _, tmp = snapped
    snapped[0].stop()
    con_b, con_c = tmp / "b.txt", tmp / "c.txt"
    b = restore_snapshot(tmp / "snap", console_spec=CharConfig.parse(f"file:{con_b}"))
    try:
        assert b.memory.regions[0].fd is None
        b.start()
        wait_for_lines(con_b, 3)
        b.pause()
        write_snapshot(b, tmp / "snap2")
    finally:
        stop(b)
    c = restore_snapshot(tmp / "snap2", console_spec=CharConfig.parse(f"file:{con_c}"))
    try:
        c.start()
        wait_for_lines(con_c, 2)
        c.pause()
        a_then_b = (tmp / "a.txt").read_text() + con_b.read_text()
        assert_one_count(a_then_b, con_c.read_text())
    finally:
        stop(c)


def test_failed_load_leaves_the_vmm_unstarted(snapped) -> None:
    from kvmlite.vmm.vmm import Vmm

    _, tmp = snapped
    snapped[0].stop()
    os.truncate(tmp / "snap" / MEMORY_FILE, MEMORY // 2)
    vmm = Vmm()
    try:
        with pytest.raises(SnapshotError, match="memory file"):
            vmm.restore(tmp / "snap")
        assert vmm.state.value == "Not started" and vmm.machine is None
        os.truncate(tmp / "snap" / MEMORY_FILE, MEMORY)  # now zeros at the top: loads
        vmm.restore(tmp / "snap", resume=False, console=CharConfig.parse("null"))
        assert vmm.state.value == "Paused"
    finally:
        vmm.close()


def test_restore_beside_the_live_source_is_refused_by_the_disk_lock(snapped) -> None:
    from kvmlite.errors import KvmliteError

    a, tmp = snapped
    with pytest.raises(KvmliteError, match="lock"):
        restore_snapshot(tmp / "snap", console_spec=CharConfig.parse("null"))
    a.stop()  # the half-built machine left no lock behind: now it restores
    restore_snapshot(tmp / "snap", console_spec=CharConfig.parse("null")).close()

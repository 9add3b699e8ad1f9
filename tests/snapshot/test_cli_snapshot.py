"""``kvmlite snapshot SOCK DIR`` against kvmlite's own REST API socket: the VM
is paused, saved (``PUT /snapshot/create``), resumed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from vmm.counting import assert_one_count, counter_config, counts, wait_for_lines

from kvmlite.api.rest import RestApi
from kvmlite.api.server import ApiServer
from kvmlite.config import CharConfig
from kvmlite.vmm.actions import Pause, Start
from kvmlite.vmm.vmm import Vmm

pytestmark = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)


def kvmlite(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kvmlite.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_snapshot_of_a_running_vm_resumes_it_and_restores(tmp_path: Path) -> None:
    con = tmp_path / "a.txt"
    vmm = Vmm(counter_config(tmp_path, con))
    rest = RestApi(vmm)
    requests: list[tuple[str, str]] = []

    def handle(method: str, target: str, body: bytes) -> tuple[int, object]:
        requests.append((method, target))
        return rest.handle(method, target, body)

    api = ApiServer(tmp_path / "api.sock", handle)
    api.start()
    try:
        vmm.submit(Start())
        wait_for_lines(con, 2)
        r = kvmlite("snapshot", tmp_path / "api.sock", tmp_path / "snap")
        assert r.returncode == 0, r.stderr
        assert requests == [
            ("GET", "/"),
            ("GET", "/vm/config"),
            ("PATCH", "/vm"),
            ("PUT", "/snapshot/create"),
            ("PATCH", "/vm"),
        ]
        assert vmm.state.value == "Running"
        n = len(counts(con.read_text()))
        assert len(wait_for_lines(con, n + 2)) >= n + 2  # it runs on after the snapshot
        vmm.submit(Pause())
        # Refused, and the VM is left as it was (paused here, so not resumed).
        r = kvmlite("snapshot", tmp_path / "api.sock", "/proc/no/such/dir")
        assert r.returncode == 1 and "snapshot" in r.stderr and "Traceback" not in r.stderr
        assert vmm.state.value == "Paused"
    finally:
        api.close()
        vmm.close()
    restored = Vmm()
    con_b = tmp_path / "b.txt"
    try:
        restored.restore(tmp_path / "snap", console=CharConfig.parse(f"file:{con_b}"))
        wait_for_lines(con_b, 2)
        restored.submit(Pause())
    finally:
        restored.close()
    # b.txt goes on from the snapshot, which a.txt ran past: compare up to it.
    at_snapshot = counts(con_b.read_text())[0][0] - 1
    before = "".join(line for line in con.read_text().splitlines(keepends=True)[:at_snapshot])
    assert_one_count(before, con_b.read_text())


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    r = kvmlite("snapshot", tmp_path / "none.sock", tmp_path / "snap")
    assert r.returncode == 1 and "no such API socket" in r.stderr
    r = kvmlite("snapshot", "--diff", tmp_path / "none.sock", tmp_path / "snap")
    assert r.returncode == 1 and "diff snapshots are not supported yet" in r.stderr
    assert not (tmp_path / "snap").exists()

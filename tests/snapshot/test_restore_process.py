"""Snapshot in one process, kill it, restore in another (``kvmlite run --restore``).

The first process drives a ``Vmm`` through the Python API (Start, Pause,
``vmm.snapshot``) and is then killed with SIGKILL; ``kvmlite run --restore``
brings the guest back in a new process, whose count must go on from the
last one printed (no reset, no repeat), on both vCPUs of the SMP variant.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from vmm.counting import assert_one_count, counter_config, wait_for_lines

from kvmlite.config import CharConfig
from kvmlite.vmm.actions import ActionRefused, Pause, Resume, Start
from kvmlite.vmm.vmm import Vmm

pytestmark = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)

CHILD = """
import sys, threading, time
from pathlib import Path
from kvmlite.config import VmConfig
from kvmlite.vmm.actions import Pause, Start
from kvmlite.vmm.vmm import Vmm

config_json, console, directory = sys.argv[1:]
vmm = Vmm(VmConfig.from_json(Path(config_json).read_text()))
vmm.submit(Start())
deadline = time.monotonic() + 60
while Path(console).read_text().count("\\n") < 3 and time.monotonic() < deadline:
    time.sleep(0.05)
vmm.submit(Pause())
vmm.snapshot(directory)
print("snapshotted", flush=True)
threading.Event().wait()  # until the test kills this process
"""


def snapshot_in_child(tmp_path: Path, cpus: int) -> tuple[Path, str]:
    """Snapshot a counting guest in a child process, then SIGKILL the child."""
    con_a = tmp_path / "a.txt"
    config = tmp_path / "config.json"
    config.write_text(counter_config(tmp_path, con_a, cpus=cpus).to_json())
    snap = tmp_path / "snap"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(config), str(con_a), str(snap)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "snapshotted"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    return snap, con_a.read_text()


@pytest.mark.parametrize("cpus", [1, 2])
def test_count_goes_on_in_a_new_process(tmp_path: Path, cpus: int) -> None:
    snap, before = snapshot_in_child(tmp_path, cpus)
    con_b = tmp_path / "b.txt"
    cmd = [sys.executable, "-m", "kvmlite.cli", "run", "--restore", str(snap)]
    restored = subprocess.Popen([*cmd, "--console", f"file:{con_b}"], stderr=subprocess.PIPE)
    try:
        got = wait_for_lines(con_b, 3)
        assert len(got) >= 3, restored.stderr.read() if restored.poll() is not None else got
    finally:
        restored.kill()
        restored.wait(10)
    assert_one_count(before, con_b.read_text())


def test_run_restore_refuses_machine_options_and_bad_snapshots(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "kvmlite.cli", "run", "--console", "null", "--restore"]
    r = subprocess.run([*cmd, str(tmp_path), "-m", "1G"], capture_output=True, text=True)
    assert r.returncode != 0 and "takes the machine from the snapshot" in r.stderr
    r = subprocess.run([*cmd, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "cannot read snapshot" in r.stderr
    assert "Traceback" not in r.stderr


def test_snapshot_action_needs_a_paused_vm_and_refusal_changes_nothing(tmp_path: Path) -> None:
    con = tmp_path / "a.txt"
    vmm = Vmm(counter_config(tmp_path, con))
    try:
        with pytest.raises(ActionRefused, match="not been started"):
            vmm.snapshot(tmp_path / "snap")
        vmm.submit(Start())
        n = len(wait_for_lines(con, 2))
        with pytest.raises(ActionRefused, match="running"):
            vmm.snapshot(tmp_path / "snap")
        assert not (tmp_path / "snap").exists()
        assert len(wait_for_lines(con, n + 2)) >= n + 2  # the source VM keeps running
        with pytest.raises(ActionRefused, match="load a snapshot"):
            vmm.restore(tmp_path / "snap")
        vmm.submit(Pause())
        info = vmm.snapshot(tmp_path / "snap")
        assert info.memory_size == 32 << 20 and (tmp_path / "snap" / "state").exists()
        assert vmm.state.value == "Paused"
    finally:
        vmm.close()
    # A Vmm restored paused stays paused until resumed, then counts on.
    con_b = tmp_path / "b.txt"
    restored = Vmm()
    try:
        restored.restore(tmp_path / "snap", resume=False, console=CharConfig.parse(f"file:{con_b}"))
        assert restored.state.value == "Paused" and restored.config.machine.memory == 32 << 20
        restored.submit(Resume())
        wait_for_lines(con_b, 3)
        restored.submit(Pause())
        assert_one_count(con.read_text(), con_b.read_text())
    finally:
        restored.close()

"""``kvmlite ps|pause|resume|stop|powerdown`` against tiny guests under ``kvmlite run``,
and the runtime directory's life: written at start, removed at the end and after kill -9."""

from __future__ import annotations

import json
import os
import signal

import pytest

from .vmrig import KvmliteVm, counter_guest, counts, poll

pytestmark = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    return counter_guest(tmp_path_factory.mktemp("guests"))


def ps(vm: KvmliteVm) -> list[dict]:
    r = vm.kvmlite("ps", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_default_qmp_socket_ps_pause_resume_stop(counter, short_tmp):
    vm = KvmliteVm(counter, short_tmp, vm_id="cli1")
    try:
        info = vm.wait_running()
        assert info["pid"] == vm.proc.pid
        assert info["sockets"] == {"qmp": f"unix:{vm.rundir}/qmp.sock"}
        [row] = ps(vm)
        assert (row["id"], row["pid"], row["state"]) == ("cli1", vm.proc.pid, "running")
        table = vm.kvmlite("ps").stdout.splitlines()
        assert table[0].split() == ["ID", "PID", "STATE", "SOCKETS"]
        assert table[1].split()[:3] == ["cli1", str(vm.proc.pid), "running"]

        assert vm.kvmlite("pause", "cli1").returncode == 0
        assert ps(vm)[0]["state"] == "paused"
        poll("vm.json to say paused", lambda: vm.info()["state"] == "paused")
        again = vm.kvmlite("resume", "cli1")
        assert again.returncode == 0, again.stderr
        assert ps(vm)[0]["state"] == "running"
        refused = vm.kvmlite("resume", "nosuch")
        assert refused.returncode == 1 and "no running VM" in refused.stderr

        powerdown = vm.kvmlite("powerdown", "cli1")  # this guest has no ACPI: it runs on
        assert powerdown.returncode == 0, powerdown.stderr
        assert vm.kvmlite("stop", "cli1").returncode == 0
        assert vm.end() == 0
        assert not vm.rundir.exists()
        assert ps(vm) == []
        seen = counts(vm.console)
        assert seen == list(range(1, len(seen) + 1))
    finally:
        vm.close()


def test_kill_9_leaves_a_stale_entry_that_ps_removes(counter, short_tmp):
    vm = KvmliteVm(counter, short_tmp, vm_id="doomed")
    try:
        vm.wait_running()
        os.kill(vm.proc.pid, signal.SIGKILL)
        vm.proc.wait()
        assert (vm.rundir / "vm.json").exists()  # nobody could remove it
        assert ps(vm) == []
        assert not vm.rundir.exists()
        r = vm.kvmlite("pause", "doomed")
        assert r.returncode == 1 and "no running VM" in r.stderr
    finally:
        vm.close()


def test_same_id_twice_is_refused(counter, short_tmp):
    vm = KvmliteVm(counter, short_tmp, vm_id="twin")
    try:
        vm.wait_running()
        r = vm.kvmlite("run", "-k", str(counter), "-m", "32", "--console", "null", "--id", "twin")
        assert r.returncode == 1 and "running already" in r.stderr
        assert vm.kvmlite("stop", "twin").returncode == 0
        assert vm.end() == 0
    finally:
        vm.close()


def test_bad_qmp_address_fails_before_the_guest_starts(counter, short_tmp):
    vm = KvmliteVm(counter, short_tmp, "--qmp", "unix:/nonexistent/dir/q.sock", vm_id="bad")
    try:
        assert vm.end() == 1
        assert "cannot listen" in vm.proc.stderr.read()
        assert not vm.console.exists() or counts(vm.console) == []
        assert not vm.rundir.exists()
    finally:
        vm.close()


def test_sigterm_ends_the_vm_and_removes_its_runtime_directory(counter, short_tmp):
    vm = KvmliteVm(counter, short_tmp, vm_id="termed")
    try:
        vm.wait_running()
        assert (vm.rundir / "qmp.sock").is_socket()
        vm.proc.terminate()
        assert vm.end() == 0
        assert not vm.rundir.exists()
    finally:
        vm.close()

"""Actions and the Vmm: allowed states, refusals that change nothing, events."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from kvmlite.config import BootSource, MachineConfig, VmConfig
from kvmlite.devices.legacy.acpi_pm import PWRBTN_STS, AcpiPm
from kvmlite.errors import ConfigError
from kvmlite.testing.configs import guest_config
from kvmlite.testing.guests import GUEST_DIR, build_guest
from kvmlite.vmm import actions as a
from kvmlite.vmm.machine import RunState
from kvmlite.vmm.outcome import ExitReason
from kvmlite.vmm.vmm import VmEvent, Vmm

needs_kvm = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)

RUNTIME_ACTIONS = [
    a.Pause(),
    a.Resume(),
    a.PowerButton(),
    a.SendCtrlAltDel(),
    a.Reset(),
    a.Inspect(lambda m: m.vcpus),
]


@pytest.fixture
def vmm():
    v = Vmm(VmConfig(machine=MachineConfig(memory=64 << 20)))
    yield v
    v.close()


@pytest.mark.parametrize("action", RUNTIME_ACTIONS, ids=lambda x: type(x).__name__)
def test_runtime_actions_are_refused_before_boot_and_change_nothing(vmm, action) -> None:
    before = vmm.config
    with pytest.raises(a.ActionRefused, match="has not been started"):
        vmm.submit(action)
    assert vmm.config is before and vmm.state is RunState.NOT_STARTED and vmm.machine is None


def test_configure_replaces_the_pending_config_or_changes_nothing(vmm) -> None:
    new = vmm.submit(a.Configure(lambda c: dataclasses.replace(c, boot=BootSource(cmdline="x"))))
    assert vmm.config is new and new.boot.cmdline == "x"

    def bad(c: VmConfig) -> VmConfig:
        return dataclasses.replace(c, machine=MachineConfig(cpus=0))  # raises ConfigError

    with pytest.raises(ConfigError, match="vCPUs"):
        vmm.submit(a.Configure(bad))
    assert vmm.config is new


def test_describe_and_quit_before_boot(vmm) -> None:
    d = vmm.submit(a.Describe())
    assert (d.id, d.state, d.started_at) == (vmm.id, RunState.NOT_STARTED, None)
    events: list[VmEvent] = []
    vmm.subscribe(events.append)
    vmm.submit(a.Quit("bye"))
    outcome = vmm.wait(5)
    assert outcome is not None and outcome.reason is ExitReason.QUIT
    assert [e.name for e in events] == ["SHUTDOWN"]
    assert events[0].data == {"guest": False, "reason": "host-qmp-quit"}


def test_a_failed_start_leaves_the_vmm_not_started(tmp_path: Path) -> None:
    junk = tmp_path / "kernel"
    junk.write_bytes(b"not a kernel at all" * 10)
    vmm = Vmm(guest_config(junk))
    try:
        with pytest.raises(Exception, match="neither a bzImage"):
            vmm.submit(a.Start())
        assert vmm.state is RunState.NOT_STARTED and vmm.machine is None
    finally:
        vmm.close()


@needs_kvm
def test_a_tiny_guest_through_actions(tmp_path: Path) -> None:
    spin = build_guest(GUEST_DIR / "spin.c", tmp_path, kind="pvh")
    vmm = Vmm(guest_config(spin, cpus=2))
    events: list[str] = []
    vmm.subscribe(lambda e: events.append(e.name))
    try:
        vmm.submit(a.Start())
        assert vmm.state is RunState.RUNNING
        with pytest.raises(a.ActionRefused, match="already running"):
            vmm.submit(a.Start())
        with pytest.raises(a.ActionRefused, match="before it starts"):
            vmm.submit(a.Configure(lambda c: c))
        with pytest.raises(a.ActionRefused, match="running"):
            vmm.submit(a.Resume())
        vmm.submit(a.Pause())
        assert vmm.state is RunState.PAUSED
        rip = vmm.submit(a.Inspect(lambda m: m.vcpus[0].get_regs().rip))
        assert rip >= 0x100000
        with pytest.raises(a.ActionRefused, match="paused"):
            vmm.submit(a.Pause())
        vmm.submit(a.Resume())
        vmm.submit(a.PowerButton())
        machine = vmm.machine
        assert machine is not None
        pm = machine.devices.get("acpi-pm", AcpiPm)
        assert pm.save().pm1_sts & PWRBTN_STS  # the guest would see the button's status bit
        vmm.submit(a.Quit("test done"))
        outcome = vmm.wait(10)
        assert outcome is not None and outcome.reason is ExitReason.QUIT
        assert vmm.state is RunState.STOPPED
        assert events == ["STOP", "RESUME", "POWERDOWN", "SHUTDOWN"]
    finally:
        vmm.close()

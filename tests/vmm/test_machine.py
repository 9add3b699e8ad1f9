"""Machine lifecycle on /dev/kvm: run in a thread, pause, inspect, resume, stop."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from kvmlite.testing.configs import guest_config
from kvmlite.testing.guests import GUEST_DIR, build_guest
from kvmlite.vmm.builder import build_vm
from kvmlite.vmm.machine import ExitReason

pytestmark = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)


def test_pause_inspect_resume_and_stop(tmp_path: Path) -> None:
    elf = build_guest(GUEST_DIR / "spin.c", tmp_path, kind="pvh")  # spins, no exits
    machine = build_vm(guest_config(elf, cpus=2))
    runner = threading.Thread(target=lambda: setattr(machine, "outcome", machine.run()))
    runner.start()
    try:
        threading.Event().wait(1.0)
        machine.pause()
        assert machine.paused
        rip = machine.vcpus[0].get_regs().rip
        assert rip >= 0x100000  # the BSP is in the guest's code at 1 MiB, not at reset
        threading.Event().wait(0.3)
        assert machine.vcpus[0].get_regs().rip == rip  # paused means not running
        machine.resume()
        assert not machine.paused
        machine.request_exit(ExitReason.QUIT, message="test done")
        runner.join(10)
        assert not runner.is_alive()
        assert machine.outcome.reason is ExitReason.QUIT and machine.outcome.status == 0
    finally:
        if runner.is_alive():
            machine.request_exit(ExitReason.ERROR)
            runner.join(10)
        machine.close()

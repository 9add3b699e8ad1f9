"""The per-vCPU thread: KVM_RUN, then hand each exit to the right place.

This is the hot path of the VMM (DESIGN.md, "Where the data goes"): a port
or MMIO access trapped by KVM becomes one ``Bus`` dispatch and one device
register handler. Everything else (halt, shutdown, crashes) is rare.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kvmlite.kvm import exits as kx
from kvmlite.kvm.exits import IntrExit, IoExit, MmioExit
from kvmlite.vmm.outcome import ExitReason

if TYPE_CHECKING:
    from kvmlite.kvm.vcpu import Vcpu
    from kvmlite.vmm.machine import Machine

log = logging.getLogger(__name__)

# KVM_SYSTEM_EVENT_* (linux/kvm.h)
SYSTEM_EVENT_SHUTDOWN = 1
SYSTEM_EVENT_RESET = 2
SYSTEM_EVENT_CRASH = 3


def run_vcpu(machine: Machine, vcpu: Vcpu) -> None:
    """Thread body: run one vCPU until the machine stops."""
    try:
        _loop(machine, vcpu)
    except Exception as e:  # a VMM bug: end the machine with a clear report
        log.exception("vCPU %d failed", vcpu.index)
        machine.request_exit(ExitReason.ERROR, message=f"vCPU {vcpu.index}: {e}")


def _loop(machine: Machine, vcpu: Vcpu) -> None:
    # Bus.read/write answer an unclaimed access like an open bus (all-ones,
    # writes dropped) and log each address once.
    pio_read, pio_write = machine.pio_bus.read, machine.pio_bus.write
    mmio_read, mmio_write = machine.mmio_bus.read, machine.mmio_bus.write
    run = vcpu.run
    while not machine.stopping:
        ex = run()
        if type(ex) is IoExit:
            size, port, data = ex.size, ex.port, ex.data
            if ex.is_write:
                for i in range(0, ex.count * size, size):
                    pio_write(port, bytes(data[i : i + size]))
            else:
                for i in range(0, ex.count * size, size):
                    data[i : i + size] = pio_read(port, size)
        elif type(ex) is MmioExit:
            if ex.is_write:
                mmio_write(ex.address, bytes(ex.data[: ex.length]))
            else:
                ex.data[: ex.length] = mmio_read(ex.address, ex.length)
        elif type(ex) is IntrExit:
            machine.park_if_paused(vcpu)
        else:
            reason, code, message = _classify(machine, vcpu, ex)
            if reason is not None:
                machine.request_exit(reason, code, message)
                return


def _classify(machine: Machine, vcpu: Vcpu, ex: kx.Exit) -> tuple[ExitReason | None, int, str]:
    """Map a rare exit to (ExitReason, code, message); None keeps running."""
    from kvmlite.kvm.report import crash_report

    if isinstance(ex, kx.HltExit):
        # Only reached without an in-kernel LAPIC; kvmlite always has one, so a
        # halt here means the vCPU can never wake: treat it as the guest ending.
        return ExitReason.POWEROFF, 0, f"vCPU {vcpu.index} halted"
    if isinstance(ex, kx.SystemEventExit):
        if ex.type == SYSTEM_EVENT_SHUTDOWN:
            return ExitReason.POWEROFF, 0, "guest powered off"
        if ex.type == SYSTEM_EVENT_RESET:
            return ExitReason.REBOOT, 0, "guest reset"
        return ExitReason.CRASH, 0, f"guest crashed (system event {ex.type})"
    if isinstance(ex, kx.ShutdownExit):
        # A triple fault. On a PC it resets the machine, and Linux's reboot=t
        # path uses it on purpose; but with reboot=k (kvmlite's default
        # command line) Linux resets through the i8042, so a triple fault is
        # almost always a guest that died: report it as a crash, with registers.
        report = crash_report(vcpu, ex, machine.memory)
        return ExitReason.CRASH, 0, f"vCPU {vcpu.index}: triple fault (shutdown)\n{report}"
    if isinstance(ex, kx.InternalErrorExit | kx.FailEntryExit):
        report = crash_report(vcpu, ex, machine.memory)
        return ExitReason.CRASH, 0, f"vCPU {vcpu.index} stopped:\n{report}"
    if isinstance(ex, kx.DebugExit):
        return None, 0, ""
    report = crash_report(vcpu, ex, machine.memory)
    return ExitReason.ERROR, 0, f"vCPU {vcpu.index}: unexpected exit\n{report}"

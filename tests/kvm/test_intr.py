"""Stopping a vCPU: immediate_exit, and a signal sent to the vCPU thread (IntrExit)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlite.kvm import IntrExit, IoExit


@pytest.fixture
def sigusr1() -> Iterator[None]:
    # A handler must exist, or SIGUSR1 would kill the process instead of interrupting
    # KVM_RUN. It runs later on the main thread; the vCPU thread only sees EINTR.
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    yield
    signal.signal(signal.SIGUSR1, old)


def test_immediate_exit(machine, flat_guests: dict[str, Path]) -> None:
    machine.load_flat(flat_guests["hello"])
    assert machine.vcpu.immediate_exit is False
    machine.vcpu.immediate_exit = True
    assert machine.vcpu.immediate_exit is True
    assert isinstance(machine.vcpu.run(), IntrExit)
    assert machine.vcpu.get_regs().rip == 0x100000  # the guest did not move
    machine.vcpu.immediate_exit = False
    code, serial, _ = machine.run_until_debug_exit()
    assert (code, serial) == (0, b"hello\n")


@pytest.mark.parametrize("flag_first", [False, True])
def test_signal_stops_a_spinning_vcpu(
    machine, flat_guests: dict[str, Path], sigusr1, flag_first: bool
) -> None:
    machine.load_flat(flat_guests["spin"])
    results: list[object] = []
    started = threading.Event()

    def vcpu_thread() -> None:
        first = machine.vcpu.run()
        results.append(first)
        started.set()
        results.append(machine.vcpu.run())  # spins in the guest until interrupted

    t = threading.Thread(target=vcpu_thread)
    t.start()
    assert started.wait(30)
    time.sleep(0.2)
    assert t.is_alive(), "the guest should still be spinning"
    # The pattern a VMM uses: flag first (covers a signal that lands before KVM_RUN),
    # then kick the thread. The thread is already inside KVM_RUN, so the flag alone
    # would not stop it: the signal does, with or without it.
    machine.vcpu.immediate_exit = flag_first
    deadline = time.monotonic() + 30
    while t.is_alive() and time.monotonic() < deadline:
        signal.pthread_kill(t.ident, signal.SIGUSR1)
        t.join(0.05)
    assert not t.is_alive()
    assert isinstance(results[0], IoExit) and bytes(results[0].data) == b"S"
    assert isinstance(results[1], IntrExit)
    rip = machine.vcpu.get_regs().rip
    assert 0x100000 < rip < 0x101000  # stopped somewhere inside the guest's code

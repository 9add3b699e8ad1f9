"""The running machine: vCPU threads, the I/O loop, and how the guest ends.

Theory of operation
-------------------
One thread per vCPU runs ``Vcpu.run()`` (KVM_RUN releases the GIL, so vCPUs
run in the guest in parallel) and dispatches each port-I/O or MMIO exit to the
buses: ``exit -> bus -> device``. That is the hot path; keep it short.

The first event that ends the guest (poweroff through ACPI, a reset through
the i8042 or a triple fault, a crash, a VMM error, the console's quit key)
is recorded once in ``Machine.result`` and every vCPU is kicked out of
KVM_RUN: ``immediate_exit`` is set and a signal interrupts the ioctl
(DESIGN.md, "Threads, the GIL and ioctls"). ``pause()`` uses the same kick
and parks the vCPU threads on a condition until ``resume()``.
"""

from __future__ import annotations

import enum
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvmlite.bus import Bus
from kvmlite.memory import GuestMemory
from kvmlite.vmm.eventloop import EventLoop

log = logging.getLogger(__name__)

#: The signal that kicks a vCPU thread out of KVM_RUN.
KICK_SIGNAL = signal.SIGUSR1


class ExitReason(enum.Enum):
    """How the guest ended; the CLI maps each to an exit status."""

    POWEROFF = "poweroff"
    REBOOT = "reboot"
    CRASH = "crash"
    ERROR = "error"
    DEBUG_EXIT = "debug-exit"
    QUIT = "quit"


#: ``kvmlite run`` exit statuses (documented in the README).
EXIT_STATUS = {
    ExitReason.POWEROFF: 0,
    ExitReason.QUIT: 0,
    ExitReason.ERROR: 1,
    ExitReason.REBOOT: 3,
    ExitReason.CRASH: 4,
}


def _install_kick_handler() -> None:
    """Give the kick signal a do-nothing handler (SIG_DFL would kill the
    process), so that it only interrupts KVM_RUN with EINTR. Python lets
    only the main thread set handlers: build or run the machine there once
    (``run()`` itself may then be called from any thread)."""
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(KICK_SIGNAL) in (signal.SIG_DFL, None):
            signal.signal(KICK_SIGNAL, lambda *_: None)


@dataclass(frozen=True)
class MachineExit:
    reason: ExitReason
    code: int = 0
    message: str = ""

    @property
    def status(self) -> int:
        """Process exit status for ``kvmlite run``."""
        if self.reason is ExitReason.DEBUG_EXIT:
            from kvmlite.devices.legacy.debug_exit import debug_exit_status

            return debug_exit_status(self.code)
        return EXIT_STATUS[self.reason]


@dataclass
class Machine:
    """A built machine, ready to run. The builder fills every field."""

    kvm: Any
    vm: Any
    memory: GuestMemory
    vcpus: list[Any]
    pio_bus: Bus
    mmio_bus: Bus
    loop: EventLoop
    devices: dict[str, Any] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    result: MachineExit | None = None

    def __post_init__(self) -> None:
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._paused = False
        self._parked = 0
        self._cond = threading.Condition(self._lock)
        #: Serialises the PCI root and virtio devices between vCPU threads and
        #: the I/O loop (re-entrant: a config write may move a BAR's bus entry).
        self.dev_lock = threading.RLock()
        _install_kick_handler()

    # -- ending -----------------------------------------------------------------

    def request_exit(self, reason: ExitReason, code: int = 0, message: str = "") -> None:
        """Record how the guest ended (first caller wins) and stop every vCPU."""
        with self._lock:
            if self.result is None:
                self.result = MachineExit(reason, code, message)
            self._cond.notify_all()
        self._done.set()
        self._kick_all()

    def _kick_all(self) -> None:
        for vcpu, thread in zip(self.vcpus, self._threads, strict=False):
            vcpu.immediate_exit = 1
            if thread.is_alive() and thread.ident is not None:
                try:
                    signal.pthread_kill(thread.ident, KICK_SIGNAL)
                except ProcessLookupError:
                    pass

    # -- running ----------------------------------------------------------------

    def run(self) -> MachineExit:
        """Run the guest until it ends; returns how it ended."""
        from kvmlite.vmm.vcpu_loop import run_vcpu

        _install_kick_handler()
        self.loop.start()
        for vcpu in self.vcpus:
            t = threading.Thread(
                target=run_vcpu, args=(self, vcpu), name=f"vcpu{vcpu.index}", daemon=True
            )
            self._threads.append(t)
        for t in self._threads:
            t.start()
        try:
            while not self._done.wait(0.5):
                pass
        except KeyboardInterrupt:
            self.request_exit(ExitReason.QUIT, message="interrupted")
        for t in self._threads:
            t.join(5)
        assert self.result is not None
        return self.result

    @property
    def stopping(self) -> bool:
        return self._done.is_set()

    # -- pause / resume -------------------------------------------------------

    def pause(self, timeout: float = 5.0) -> None:
        """Stop every vCPU outside KVM_RUN; returns once all are parked."""
        with self._lock:
            self._paused = True
        self._kick_all()
        with self._cond:
            alive = sum(t.is_alive() for t in self._threads)
            if not self._cond.wait_for(lambda: self._parked >= alive or self.stopping, timeout):
                raise TimeoutError("vCPUs did not stop within the timeout")

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            for vcpu in self.vcpus:
                vcpu.immediate_exit = 0
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def park_if_paused(self, vcpu: Any) -> None:
        """Called by a vCPU thread after a kick: wait here while paused."""
        with self._cond:
            if not self._paused:
                if not self.stopping:
                    vcpu.immediate_exit = 0
                return
            self._parked += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._paused or self.stopping)
            self._parked -= 1
            if not self.stopping:
                vcpu.immediate_exit = 0

    # -- teardown ---------------------------------------------------------------

    def close(self) -> None:
        """Release everything: devices' backends, the loop, KVM objects, memory."""
        self.loop.close()
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception:
                log.exception("error while closing %r", closer)
        for vcpu in self.vcpus:
            vcpu.close()
        self.vm.close()
        self.memory.close()

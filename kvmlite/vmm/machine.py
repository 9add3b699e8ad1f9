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

``Machine`` is the mechanism. Changes to a running machine come as actions
(kvmlite/vmm/actions.py), which a ``Vmm`` runs one at a time on the I/O
loop's thread; ``pause()``/``resume()`` are safe from any thread, but only
the action layer knows whether a pause is allowed now and tells listeners.
Locks: kvmlite/vmm/locking.py.
"""

from __future__ import annotations

import enum
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvmlite.bus import Bus
from kvmlite.config import VmConfig
from kvmlite.eventloop import EventLoop
from kvmlite.memory import GuestMemory
from kvmlite.vmm.devices import DeviceManager
from kvmlite.vmm.outcome import EXIT_STATUS, ExitReason, MachineExit

if TYPE_CHECKING:
    from kvmlite.arch.x86.bootplan import BootPlan
    from kvmlite.kvm import Kvm
    from kvmlite.kvm.vcpu import Vcpu
    from kvmlite.kvm.vm import Vm
    from kvmlite.vmm.gsi import GsiRouter

__all__ = ["EXIT_STATUS", "KICK_SIGNAL", "ExitReason", "Machine", "MachineExit", "RunState"]

log = logging.getLogger(__name__)

#: The signal that kicks a vCPU thread out of KVM_RUN.
KICK_SIGNAL = signal.SIGUSR1


class RunState(enum.Enum):
    """Where a machine is in its life (the REST API's instance ``state``)."""

    NOT_STARTED = "Not started"
    RUNNING = "Running"
    PAUSED = "Paused"
    STOPPED = "Stopped"


def install_kick_handler() -> None:
    """Give the kick signal a do-nothing handler (SIG_DFL would kill the
    process), so that it only interrupts KVM_RUN with EINTR. Python lets
    only the main thread set handlers: build or run the machine there once
    (``run()`` itself may then be called from any thread)."""
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(KICK_SIGNAL) in (signal.SIG_DFL, None):
            signal.signal(KICK_SIGNAL, lambda *_: None)


@dataclass
class Machine:
    """An assembled machine (kvmlite/vmm/builder.py fills every field)."""

    config: VmConfig
    kvm: Kvm
    vm: Vm
    memory: GuestMemory
    pio_bus: Bus
    mmio_bus: Bus
    loop: EventLoop
    vcpus: list[Vcpu] = field(default_factory=list)
    devices: DeviceManager = field(default_factory=DeviceManager)
    gsi: GsiRouter | None = None
    #: Set by ``boot()``: what was loaded where, and the final command line.
    boot_plan: BootPlan | None = None
    cmdline: str = ""
    #: Command-line fragments the devices need (virtio-mmio announcements).
    cmdline_extra: list[str] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)
    result: MachineExit | None = None
    #: False when the loop belongs to someone else (a ``Vmm``): ``close`` leaves it.
    owns_loop: bool = True
    #: Called once, from the thread that ended the guest, with the outcome.
    exit_listeners: list[Callable[[MachineExit], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._paused = False
        self._parked = 0
        self._cond = threading.Condition(self._lock)
        #: Lock level 1 of kvmlite/vmm/locking.py: PCI root, virtio transports and devices.
        self.dev_lock = threading.RLock()
        install_kick_handler()

    @property
    def state(self) -> RunState:
        if self._done.is_set():
            return RunState.STOPPED
        if not self._started:
            return RunState.NOT_STARTED
        return RunState.PAUSED if self._paused else RunState.RUNNING

    # -- ending -----------------------------------------------------------------

    def request_exit(self, reason: ExitReason, code: int = 0, message: str = "") -> None:
        """Record how the guest ended (first caller wins) and stop every vCPU."""
        with self._lock:
            first = self.result is None
            if first:
                self.result = MachineExit(reason, code, message)
            self._cond.notify_all()
        self._done.set()
        self._kick_all()
        if first:
            assert self.result is not None
            for listener in self.exit_listeners:
                try:
                    listener(self.result)
                except Exception:
                    log.exception("exit listener %r failed", listener)

    def _kick_all(self) -> None:
        for vcpu, thread in zip(self.vcpus, self._threads, strict=False):
            vcpu.immediate_exit = True
            if thread.is_alive() and thread.ident is not None:
                try:
                    signal.pthread_kill(thread.ident, KICK_SIGNAL)
                except ProcessLookupError:
                    pass

    # -- running ----------------------------------------------------------------

    def start(self, *, paused: bool = False) -> None:
        """Start the I/O loop (if not running yet) and one thread per vCPU;
        ``paused``: the vCPU threads park before their first KVM_RUN (a
        restored snapshot that is not resumed yet)."""
        from kvmlite.vmm.vcpu_loop import run_vcpu  # noqa: PLC0415

        if self._started:
            raise RuntimeError("the machine was started already")
        install_kick_handler()
        if self.loop.thread is None:
            self.loop.start()
        self._started = True
        if paused:
            self._paused = True
            for vcpu in self.vcpus:
                vcpu.immediate_exit = True  # the first KVM_RUN returns EINTR: park
        for vcpu in self.vcpus:
            t = threading.Thread(
                target=run_vcpu, args=(self, vcpu), name=f"vcpu{vcpu.index}", daemon=True
            )
            self._threads.append(t)
        for t in self._threads:
            t.start()

    def wait(self, timeout: float | None = None) -> MachineExit | None:
        """Wait for the guest to end; its outcome, or None on timeout."""
        if not self._done.wait(timeout):
            return None
        for t in self._threads:
            t.join(5)
        return self.result

    def run(self) -> MachineExit:
        """Start the guest and wait until it ends; returns how it ended."""
        self.start()
        try:
            while not self._done.wait(0.5):
                pass
        except KeyboardInterrupt:
            self.request_exit(ExitReason.QUIT, message="interrupted")
        result = self.wait()
        assert result is not None
        return result

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
                vcpu.immediate_exit = False
            self._cond.notify_all()

    def vcpu_thread_ids(self) -> list[int | None]:
        """The host thread id (``gettid``) of each vCPU's thread, None before it runs."""
        ids: list[int | None] = [t.native_id for t in self._threads]
        return ids + [None] * (len(self.vcpus) - len(ids))

    @property
    def paused(self) -> bool:
        return self._paused

    def park_if_paused(self, vcpu: Vcpu) -> None:
        """Called by a vCPU thread after a kick: wait here while paused."""
        with self._cond:
            if not self._paused:
                if not self.stopping:
                    vcpu.immediate_exit = False
                return
            self._parked += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._paused or self.stopping)
            self._parked -= 1
            if not self.stopping:
                vcpu.immediate_exit = False

    # -- teardown ---------------------------------------------------------------

    def close(self) -> None:
        """Release everything: devices' backends, the loop, KVM objects, memory."""
        if self.owns_loop:
            self.loop.close()
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception:
                log.exception("error while closing %r", closer)
        for vcpu in self.vcpus:
            vcpu.close()
        self.vm.close()
        self.kvm.close()
        self.memory.close()

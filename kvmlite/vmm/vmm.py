"""``Vmm``: one VM, its pending configuration, its machine once started, and
the thread its actions run on.

Theory of operation
-------------------
The ``Vmm`` owns an ``EventLoop`` started at once. Before boot it holds only
a ``VmConfig``, which ``Configure`` actions replace (the REST API's
``PUT /machine-config`` and friends); ``Start`` builds the machine from it on
the loop thread (kvmlite/vmm/builder.py) and starts the vCPUs. From then on
the machine's devices are served by the same loop, and every action runs
between two of its callbacks, one at a time.

``submit(action)`` is the one entry point for every front-end and may be
called from any thread: it queues the action with ``call_soon`` and waits for
its result. Called on the loop thread itself (a console escape key), it runs
the action at once.

Events (``STOP``, ``RESUME``, ``POWERDOWN``, ``RESET``, ``SHUTDOWN``, the
names QEMU's QMP uses) go to the listeners given to ``subscribe``, on the
loop thread; a listener must not block (queue the event and return).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvmlite.config import CharConfig, VmConfig
from kvmlite.eventloop import EventLoop
from kvmlite.snapshot.snapshot import SnapshotPaths
from kvmlite.vmm.actions import (
    Action,
    ActionRefused,
    Quit,
    SnapshotCreate,
    SnapshotInfo,
    SnapshotLoad,
)
from kvmlite.vmm.machine import Machine, RunState, install_kick_handler
from kvmlite.vmm.outcome import ExitReason, MachineExit

if TYPE_CHECKING:
    from kvmlite.backends.char.base import CharBackend

log = logging.getLogger(__name__)

#: QMP's SHUTDOWN "reason" for each way a guest ends (QAPI ShutdownCause).
SHUTDOWN_CAUSE = {
    ExitReason.POWEROFF: ("guest-shutdown", True),
    ExitReason.DEBUG_EXIT: ("guest-shutdown", True),
    ExitReason.REBOOT: ("guest-reset", True),
    ExitReason.CRASH: ("guest-panic", True),
    ExitReason.ERROR: ("host-error", False),
    ExitReason.QUIT: ("host-qmp-quit", False),
}


@dataclass(frozen=True)
class VmEvent:
    """An event for the management front-ends; ``timestamp`` is time.time()."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)


def new_vm_id() -> str:
    return f"vm-{uuid.uuid4().hex[:8]}"


class Vmm:
    """See the module docstring. Create it on the main thread (signal set-up)."""

    def __init__(
        self,
        config: VmConfig | None = None,
        *,
        id: str | None = None,
        console: CharBackend | None = None,
    ) -> None:
        install_kick_handler()
        self.id = id or new_vm_id()
        self.config = config or VmConfig()
        self.machine: Machine | None = None
        self.started_at: float | None = None
        self.pid = os.getpid()
        self._console = console
        self._listeners: list[Callable[[VmEvent], None]] = []
        self._ended = threading.Event()
        self._outcome: MachineExit | None = None
        self.loop = EventLoop()
        self.loop.start()

    @property
    def state(self) -> RunState:
        if self.machine is None:
            return RunState.STOPPED if self._ended.is_set() else RunState.NOT_STARTED
        return self.machine.state

    # -- actions -----------------------------------------------------------------

    def submit(self, action: Action, timeout: float | None = 30.0) -> Any:
        """Run ``action`` on the loop thread and return its result (or raise its error)."""
        if threading.current_thread() is self.loop.thread:
            return self._run(action)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def call() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(self._run(action))
            except BaseException as e:  # handed to the submitter, who re-raises it
                future.set_exception(e)

        self.loop.call_soon(call)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the VMM did not answer {type(action).__name__} in time") from None

    def _run(self, action: Action) -> Any:
        state = self.state
        if state not in action.allowed:
            raise ActionRefused(action.refusal(state))
        return action.run(self)

    # -- what the actions call (on the loop thread) --------------------------------

    def start_machine(self) -> None:
        from kvmlite.vmm.builder import build_vm  # noqa: PLC0415

        def on_quit() -> None:
            self.submit(Quit("quit from console"))

        machine = build_vm(self.config, console=self._console, loop=self.loop, on_quit=on_quit)
        machine.exit_listeners.append(self._machine_ended)
        self.machine = machine
        machine.start()
        self.started_at = time.monotonic()

    def restore_machine(
        self, where: Path | SnapshotPaths, *, resume: bool, console: CharConfig | None = None
    ) -> None:
        """Build the machine from a snapshot (kvmlite/snapshot/) and start its
        vCPUs, parked unless ``resume``. Nothing is left behind if it fails."""
        from kvmlite.snapshot import read_snapshot, restore_snapshot  # noqa: PLC0415

        def on_quit() -> None:
            self.submit(Quit("quit from console"))

        snap = read_snapshot(where)
        machine = restore_snapshot(
            snap, console=self._console, console_spec=console, loop=self.loop, on_quit=on_quit
        )
        machine.exit_listeners.append(self._machine_ended)
        self.config = machine.config
        self.machine = machine
        machine.start(paused=not resume)
        self.started_at = time.monotonic()

    # -- the Python API -----------------------------------------------------------

    def snapshot(
        self,
        where: str | Path | SnapshotPaths,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> SnapshotInfo:
        """Save the paused VM to ``where`` (the SnapshotCreate action)."""
        target = where if isinstance(where, SnapshotPaths) else Path(where)
        return self.submit(SnapshotCreate(target, progress), timeout=None)

    def restore(
        self,
        where: str | Path | SnapshotPaths,
        *,
        resume: bool = True,
        console: CharConfig | None = None,
    ) -> SnapshotInfo:
        """Bring a snapshot back in this (not started) Vmm (the SnapshotLoad action)."""
        target = where if isinstance(where, SnapshotPaths) else Path(where)
        return self.submit(SnapshotLoad(target, resume, console), timeout=None)

    def quit(self, message: str) -> None:
        if self.machine is not None:
            self.machine.request_exit(ExitReason.QUIT, message=message)
        else:
            self._finish(MachineExit(ExitReason.QUIT, message=message))

    def _machine_ended(self, outcome: MachineExit) -> None:
        # Any thread (a vCPU's, usually): report on the loop thread, then wake wait().
        self.loop.call_soon(lambda: self._finish(outcome))

    def _finish(self, outcome: MachineExit) -> None:
        if self._ended.is_set():
            return
        self._outcome = outcome
        reason, guest = SHUTDOWN_CAUSE[outcome.reason]
        self.emit("SHUTDOWN", {"guest": guest, "reason": reason})
        self._ended.set()

    # -- events ------------------------------------------------------------------

    def subscribe(self, listener: Callable[[VmEvent], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[VmEvent], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(self, name: str, data: dict[str, Any] | None = None) -> None:
        event = VmEvent(name, data or {})
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed", listener)

    # -- the end -----------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> MachineExit | None:
        """Wait until the VM has ended (guest poweroff, crash, quit...)."""
        if not self._ended.wait(timeout):
            return None
        if self.machine is not None:
            self.machine.wait(5)
        return self._outcome

    def close(self) -> None:
        """Stop the guest if it still runs and release everything."""
        if self.machine is not None:
            if not self.machine.stopping:
                self.machine.request_exit(ExitReason.QUIT, message="VMM closed")
            self.machine.wait(5)
            self.machine.close()
        self.loop.close()

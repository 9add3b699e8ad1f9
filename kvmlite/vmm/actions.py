"""Actions: every change to a machine, and every question about it, as an object.

Theory of operation
-------------------
Front-ends (the REST API, QMP, the console's escape keys, the Python API)
never touch a device or the machine (DESIGN.md rule 5). They build an
``Action`` and hand it to ``Vmm.submit``, which runs it on the I/O loop's
thread, one action at a time, and hands back its result (or its error).
Each action class says in which states it is allowed (``allowed``); one
submitted in another state is refused with ``ActionRefused`` before it
runs, so a refused action changes nothing. An action that fails half-way
must leave things as they were (``Start`` closes what it built).

Actions that touch a device take the lock its device-manager entry names
(kvmlite/vmm/locking.py), exactly as a vCPU's register access would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from kvmlite.config import CharConfig, VmConfig
from kvmlite.errors import KvmliteError
from kvmlite.vmm.machine import RunState
from kvmlite.vmm.outcome import ExitReason

if TYPE_CHECKING:
    from kvmlite.snapshot import SnapshotPaths
    from kvmlite.vmm.machine import Machine
    from kvmlite.vmm.vmm import Vmm

BEFORE_BOOT = frozenset({RunState.NOT_STARTED})
RUNNING = frozenset({RunState.RUNNING})
PAUSED = frozenset({RunState.PAUSED})
STARTED = frozenset({RunState.RUNNING, RunState.PAUSED})
ANY = frozenset(RunState)

#: Ctrl-Alt-Del pressed then released, in PS/2 scan code set 2 (what Firecracker
#: sends to its i8042 for SendCtrlAltDel) and in set 1, which a guest gets
#: when its controller translates (the PC default).
CTRL_ALT_DEL_SET2 = bytes([0x14, 0x11, 0xE0, 0x71, 0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14])
CTRL_ALT_DEL_SET1 = bytes([0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D])


class ActionRefused(KvmliteError):
    """The action is not allowed in the machine's current state; nothing changed."""


class ActionFailed(KvmliteError):
    """The action was allowed but could not be done; nothing changed."""


class Action:
    """Base class. Subclasses set ``allowed`` and implement ``run``."""

    allowed: ClassVar[frozenset[RunState]] = ANY
    #: Said in the refusal, e.g. "pause" -> "cannot pause: the VM is not running".
    verb: ClassVar[str] = "do that"

    def run(self, vmm: Vmm) -> Any:
        raise NotImplementedError

    def refusal(self, state: RunState) -> str:
        if state is RunState.NOT_STARTED:
            why = "the VM has not been started"
        elif state is RunState.STOPPED:
            why = "the VM has stopped"
        elif RunState.NOT_STARTED in self.allowed:
            why = "the VM is already running (this can only be done before it starts)"
        else:
            why = f"the VM is {state.value.lower()}"
        return f"cannot {self.verb}: {why}"


def _machine(vmm: Vmm) -> Machine:
    assert vmm.machine is not None  # guaranteed by ``allowed``
    return vmm.machine


# -- before boot -------------------------------------------------------------------


@dataclass(frozen=True)
class Configure(Action):
    """Replace the pending configuration by ``update(current)`` (before boot only).

    ``update`` runs on the loop thread, so two front-ends configuring at once
    never lose each other's change; if it raises (a ConfigError), nothing changes.
    """

    update: Callable[[VmConfig], VmConfig]
    allowed: ClassVar[frozenset[RunState]] = BEFORE_BOOT
    verb: ClassVar[str] = "change the configuration"

    def run(self, vmm: Vmm) -> VmConfig:
        new = self.update(vmm.config)
        if not isinstance(new, VmConfig):
            raise TypeError("a Configure update must return a VmConfig")
        vmm.config = new
        return new


@dataclass(frozen=True)
class Start(Action):
    """Build the machine from the pending configuration and start its vCPUs."""

    allowed: ClassVar[frozenset[RunState]] = BEFORE_BOOT
    verb: ClassVar[str] = "start the VM"

    def run(self, vmm: Vmm) -> None:
        vmm.start_machine()


# -- a running machine -------------------------------------------------------------


@dataclass(frozen=True)
class Pause(Action):
    allowed: ClassVar[frozenset[RunState]] = RUNNING
    verb: ClassVar[str] = "pause"

    def run(self, vmm: Vmm) -> None:
        _machine(vmm).pause()
        vmm.emit("STOP")


@dataclass(frozen=True)
class Resume(Action):
    allowed: ClassVar[frozenset[RunState]] = PAUSED
    verb: ClassVar[str] = "resume"

    def run(self, vmm: Vmm) -> None:
        _machine(vmm).resume()
        vmm.emit("RESUME")


@dataclass(frozen=True)
class PowerButton(Action):
    """Press the ACPI power button: the guest sees an SCI and shuts itself down."""

    allowed: ClassVar[frozenset[RunState]] = STARTED
    verb: ClassVar[str] = "press the power button"

    def run(self, vmm: Vmm) -> None:
        from kvmlite.devices.legacy.acpi_pm import AcpiPm  # noqa: PLC0415

        entry = _machine(vmm).devices.entry("acpi-pm")
        pm = _machine(vmm).devices.get("acpi-pm", AcpiPm)
        with entry.locked():
            pm.press_power_button()
        vmm.emit("POWERDOWN")


@dataclass(frozen=True)
class SendCtrlAltDel(Action):
    """Type Ctrl-Alt-Del on the i8042 keyboard (Firecracker's SendCtrlAltDel)."""

    allowed: ClassVar[frozenset[RunState]] = RUNNING
    verb: ClassVar[str] = "send Ctrl-Alt-Del"

    def run(self, vmm: Vmm) -> None:
        from kvmlite.devices.legacy.i8042 import I8042  # noqa: PLC0415

        entry = _machine(vmm).devices.entry("i8042")
        i8042 = _machine(vmm).devices.get("i8042", I8042)
        with entry.locked():
            i8042.push_keyboard(CTRL_ALT_DEL_SET1 if i8042.translating else CTRL_ALT_DEL_SET2)


@dataclass(frozen=True)
class Reset(Action):
    """A hard reset. kvmlite ends a machine that resets (as QEMU's -no-reboot
    does), with the reboot exit status; a RESET event says it was asked for."""

    allowed: ClassVar[frozenset[RunState]] = STARTED
    verb: ClassVar[str] = "reset"

    def run(self, vmm: Vmm) -> None:
        vmm.emit("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
        _machine(vmm).request_exit(ExitReason.REBOOT, message="reset by the management API")


@dataclass(frozen=True)
class Quit(Action):
    """End the VM now (the guest is not asked); before boot, end the VMM."""

    message: str = "quit"
    allowed: ClassVar[frozenset[RunState]] = ANY
    verb: ClassVar[str] = "quit"

    def run(self, vmm: Vmm) -> None:
        vmm.quit(self.message)


# -- snapshots (kvmlite/snapshot/) ---------------------------------------------------


@dataclass(frozen=True)
class SnapshotCreate(Action):
    """Save the paused VM to ``where``, a directory or a ``SnapshotPaths``
    (Firecracker's ``PUT /snapshot/create``: docs/snapshot.md has the JSON);
    ``progress(n)`` after every n bytes of guest RAM written. It stays paused."""

    where: Path | SnapshotPaths
    progress: Callable[[int], None] | None = None
    allowed: ClassVar[frozenset[RunState]] = PAUSED
    verb: ClassVar[str] = "snapshot the VM (pause it first)"

    def run(self, vmm: Vmm) -> SnapshotInfo:
        from kvmlite.snapshot import write_snapshot  # noqa: PLC0415

        snap = write_snapshot(_machine(vmm), self.where, progress=self.progress)
        return SnapshotInfo(snap.paths, snap.file.memory_size)


@dataclass(frozen=True)
class SnapshotLoad(Action):
    """Build the VM from the snapshot at ``where`` (a directory or
    ``SnapshotPaths``) instead of booting (Firecracker's ``PUT /snapshot/load``),
    paused unless ``resume``.
    ``console`` replaces the saved console's host side. Allowed only before
    boot, on a Vmm whose pending configuration is then the snapshot's."""

    where: Path | SnapshotPaths
    resume: bool = True
    console: CharConfig | None = None
    allowed: ClassVar[frozenset[RunState]] = BEFORE_BOOT
    verb: ClassVar[str] = "load a snapshot"

    def run(self, vmm: Vmm) -> SnapshotInfo:
        from kvmlite.snapshot import SnapshotPaths  # noqa: PLC0415

        vmm.restore_machine(self.where, resume=self.resume, console=self.console)
        assert vmm.machine is not None
        return SnapshotInfo(SnapshotPaths.of(self.where), vmm.machine.memory.size)


@dataclass(frozen=True)
class SnapshotInfo:
    paths: SnapshotPaths
    memory_size: int


# -- questions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Describe(Action):
    """The VM's id, state and configuration (``GET /``, ``query-status``)."""

    def run(self, vmm: Vmm) -> VmDescription:
        return VmDescription(vmm.id, vmm.state, vmm.config, vmm.started_at)


@dataclass(frozen=True)
class VmDescription:
    id: str
    state: RunState
    config: VmConfig
    #: time.monotonic() when the vCPUs were started, None before.
    started_at: float | None


@dataclass(frozen=True)
class Inspect(Action):
    """Run ``query(machine)`` on the loop thread (a read-only look at a started
    machine: vCPU threads, drives...). ``query`` takes a device's entry lock if
    it reads device state."""

    query: Callable[[Machine], Any]
    allowed: ClassVar[frozenset[RunState]] = STARTED
    verb: ClassVar[str] = "inspect the VM"

    def run(self, vmm: Vmm) -> Any:
        return self.query(_machine(vmm))

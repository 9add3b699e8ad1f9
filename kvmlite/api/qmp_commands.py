"""The QMP commands kvmlite implements, each turned into a VMM action.

Names, arguments and results follow QEMU's QAPI schema (qapi/control.json,
qapi/run-state.json, qapi/machine.json, qapi/block-core.json,
qapi/misc.json). Every handler runs on the QMP server's thread and only
calls ``Vmm.submit`` (DESIGN.md rule 5): none touches the machine or a
device. A refused action becomes a ``GenericError`` (as QEMU answers a
command the VM's state forbids); ``stop`` on a paused VM and ``cont`` on a
running one succeed without doing anything, as in QEMU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kvmlite.api.qmp import GENERIC_ERROR, Handler, QmpError, version_info
from kvmlite.errors import KvmliteError
from kvmlite.vmm.actions import (
    ActionRefused,
    Describe,
    Inspect,
    Pause,
    PowerButton,
    Quit,
    Reset,
    Resume,
)
from kvmlite.vmm.machine import RunState
from kvmlite.vmm.virtio_devices import drive_id

if TYPE_CHECKING:
    from kvmlite.vmm.actions import Action
    from kvmlite.vmm.machine import Machine
    from kvmlite.vmm.vmm import Vmm

#: QAPI RunState names for kvmlite's states.
QMP_STATUS = {
    RunState.NOT_STARTED: "prelaunch",
    RunState.RUNNING: "running",
    RunState.PAUSED: "paused",
    RunState.STOPPED: "shutdown",
}

#: qmp_capabilities is handled by the session itself (kvmlite/api/qmp.py).
SESSION_COMMANDS = ("qmp_capabilities",)


def _submit(vmm: Vmm, action: Action) -> Any:
    try:
        return vmm.submit(action)
    except ActionRefused as e:
        raise QmpError(GENERIC_ERROR, str(e)) from None
    except (KvmliteError, TimeoutError) as e:
        raise QmpError(GENERIC_ERROR, str(e)) from None


def _no_args(name: str, args: dict[str, Any]) -> None:
    for key in args:
        raise QmpError(GENERIC_ERROR, f"Parameter '{key}' is unexpected")


def _cpus(machine: Machine) -> list[dict[str, Any]]:
    return [
        {
            "cpu-index": i,
            "qom-path": f"/machine/unattached/device[{i}]",
            "thread-id": tid or 0,
            "props": {"socket-id": i, "core-id": 0, "thread-id": 0},
            "target": "x86_64",
        }
        for i, tid in enumerate(machine.vcpu_thread_ids())
    ]


def make_commands(vmm: Vmm) -> dict[str, Handler]:
    """The command table for one VMM: name -> handler(arguments)."""

    def status() -> dict[str, Any]:
        state = _submit(vmm, Describe()).state
        return {"running": state is RunState.RUNNING, "status": QMP_STATUS[state]}

    def stop() -> dict[str, Any]:
        try:
            vmm.submit(Pause())
        except ActionRefused as e:
            if vmm.state is not RunState.PAUSED:
                raise QmpError(GENERIC_ERROR, str(e)) from None
        return {}

    def cont() -> dict[str, Any]:
        try:
            vmm.submit(Resume())
        except ActionRefused as e:
            if vmm.state is not RunState.RUNNING:
                raise QmpError(GENERIC_ERROR, str(e)) from None
        return {}

    def block() -> list[dict[str, Any]]:
        drives = _submit(vmm, Describe()).config.drives
        return [
            {
                "device": drive_id(i, d.id),
                "locked": False,
                "removable": False,
                "type": "unknown",
                "inserted": {
                    "file": str(d.path),
                    "ro": d.read_only,
                    "drv": d.format.value if d.format else "raw",
                    "encrypted": False,
                },
            }
            for i, d in enumerate(drives)
        ]

    def action(a: Action) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            _submit(vmm, a)
            return {}

        return run

    plain: dict[str, Callable[[], Any]] = {
        "query-status": status,
        "query-version": version_info,
        "query-cpus-fast": lambda: _submit(vmm, Inspect(_cpus)),
        "query-block": block,
        "stop": stop,
        "cont": cont,
        "system_powerdown": action(PowerButton()),
        "system_reset": action(Reset()),
        "quit": action(Quit("quit from QMP")),
    }
    names = [*SESSION_COMMANDS, *plain, "query-commands"]
    plain["query-commands"] = lambda: [{"name": n} for n in names]

    def wrap(name: str, fn: Callable[[], Any]) -> Handler:
        def handler(args: dict[str, Any]) -> Any:
            _no_args(name, args)
            return fn()

        return handler

    return {name: wrap(name, fn) for name, fn in plain.items()}

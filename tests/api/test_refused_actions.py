"""Every action refused in the VM's current state changes nothing, and so does every
QMP command that maps to one (DESIGN.md "a refused action changes nothing")."""

from __future__ import annotations

import pytest

from kvmlite.api.qmp import GENERIC_ERROR, QmpError
from kvmlite.api.qmp_commands import make_commands
from kvmlite.vmm.actions import (
    ActionRefused,
    Configure,
    Inspect,
    Pause,
    PowerButton,
    Reset,
    Resume,
    SendCtrlAltDel,
    Start,
)
from kvmlite.vmm.machine import RunState


class RecordingMachine:
    """Stands in for a started machine: reports ``state``, records any other use."""

    def __init__(self, state: RunState) -> None:
        self.__dict__["state"] = state
        self.__dict__["touched"] = []

    def __getattr__(self, name):
        self.touched.append(name)
        raise AssertionError(f"a refused action used machine.{name}")

    def __setattr__(self, name, value):
        self.touched.append(name)


ACTIONS = [
    Configure(lambda c: c),
    Start(),
    Pause(),
    Resume(),
    PowerButton(),
    SendCtrlAltDel(),
    Reset(),
    Inspect(lambda m: m.vcpus),
]


def put_in_state(vmm, state: RunState) -> RecordingMachine | None:
    if state is RunState.NOT_STARTED:
        return None
    machine = RecordingMachine(state)
    vmm.machine = machine
    return machine


CASES = [(a, s) for a in ACTIONS for s in RunState if s not in a.allowed]


@pytest.mark.parametrize(
    ("action", "state"), CASES, ids=[f"{type(a).__name__}-{s.name}" for a, s in CASES]
)
def test_refused_action_changes_nothing(vmm, action, state):
    machine = put_in_state(vmm, state)
    events = []
    vmm.subscribe(events.append)
    config = vmm.config
    with pytest.raises(ActionRefused, match="^cannot "):
        vmm.submit(action)
    assert vmm.state is state
    assert vmm.config is config
    assert events == []
    assert machine is None or machine.touched == []
    vmm.machine = None


#: QMP commands that map to actions, and the states that refuse them.
QMP_REFUSED = {
    "stop": (RunState.NOT_STARTED, RunState.STOPPED),
    "cont": (RunState.NOT_STARTED, RunState.STOPPED),
    "system_powerdown": (RunState.NOT_STARTED, RunState.STOPPED),
    "system_reset": (RunState.NOT_STARTED, RunState.STOPPED),
    "query-cpus-fast": (RunState.NOT_STARTED, RunState.STOPPED),
}
QMP_CASES = [(c, s) for c, states in QMP_REFUSED.items() for s in states]


@pytest.mark.parametrize(
    ("command", "state"), QMP_CASES, ids=[f"{c}-{s.name}" for c, s in QMP_CASES]
)
def test_refused_qmp_command_is_a_generic_error_and_changes_nothing(vmm, command, state):
    machine = put_in_state(vmm, state)
    events = []
    vmm.subscribe(events.append)
    with pytest.raises(QmpError) as e:
        make_commands(vmm)[command]({})
    assert e.value.cls == GENERIC_ERROR and e.value.desc.startswith("cannot ")
    assert vmm.state is state and events == []
    assert machine is None or machine.touched == []
    vmm.machine = None


@pytest.mark.parametrize(
    ("command", "state"), [("stop", RunState.PAUSED), ("cont", RunState.RUNNING)]
)
def test_stop_when_paused_and_cont_when_running_succeed_without_change(vmm, command, state):
    machine = put_in_state(vmm, state)
    assert make_commands(vmm)[command]({}) == {}
    assert machine.touched == [] and vmm.state is state
    vmm.machine = None

"""QMP against a real (tiny) guest under ``kvmlite run --qmp``, judged by qemu.qmp and
qmp-shell: pause/resume continues where it stopped, events, reset, quit, errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from qemu.qmp import EventListener, ExecuteError, QMPClient

from .vmrig import KvmliteVm, counter_guest, counts, hang_up, poll

pytestmark = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    return counter_guest(tmp_path_factory.mktemp("guests"))


@pytest.fixture
def vm(counter, short_tmp):
    v = KvmliteVm(counter, short_tmp, "--qmp", f"unix:{short_tmp}/q.sock,server,nowait")
    v.qmp_path = short_tmp / "q.sock"
    yield v
    v.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_pause_resume_continues_where_it_stopped(vm):
    vm.wait_running()
    poll("counter output", lambda: len(counts(vm.console)) >= 5)

    async def go():
        qmp = QMPClient("judge")
        events = EventListener()
        qmp.register_listener(events)
        await qmp.connect(str(vm.qmp_path))
        await qmp.execute("stop")
        stop = await events.get()
        paused = await qmp.execute("query-status")
        at_pause = vm.console.stat().st_size
        await qmp.execute("stop")  # already paused: no error, as in QEMU
        await qmp.execute("cont")
        resume = await events.get()
        running = await qmp.execute("query-status")
        cpus = await qmp.execute("query-cpus-fast")
        await asyncio.to_thread(
            poll, "more output", lambda: vm.console.stat().st_size > at_pause + 200
        )
        await qmp.execute("quit")
        shutdown = await events.get()
        await hang_up(qmp)
        return stop, paused, resume, running, cpus, shutdown

    stop, paused, resume, running, cpus, shutdown = run(go())
    assert stop["event"] == "STOP" and resume["event"] == "RESUME"
    assert paused == {"running": False, "status": "paused"}
    assert running == {"running": True, "status": "running"}
    assert [c["cpu-index"] for c in cpus] == [0] and cpus[0]["thread-id"] > 0
    assert shutdown["event"] == "SHUTDOWN"
    assert shutdown["data"] == {"guest": False, "reason": "host-qmp-quit"}
    assert vm.end() == 0
    seen = counts(vm.console)
    assert seen == list(range(1, len(seen) + 1)), "a gap or a repeat in the counter"


def test_reset_ends_with_reboot_status_and_event(vm):
    vm.wait_running()

    async def go():
        qmp = QMPClient("judge")
        events = EventListener()
        qmp.register_listener(events)
        await qmp.connect(str(vm.qmp_path))
        await qmp.execute("system_reset")
        names = [(await events.get())["event"], (await events.get())["event"]]
        await hang_up(qmp)
        return names

    assert run(go()) == ["RESET", "SHUTDOWN"]
    assert vm.end() == 3


def test_garbage_and_bad_commands_leave_the_vm_running(vm):
    import socket

    vm.wait_running()
    for junk in (b"\xff\xfe\x00garbage", b"{" * 5000, b'{"execute": "qmp_capabilities"}{"x":'):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(vm.qmp_path))
        s.sendall(junk)
        s.close()

    async def go():
        qmp = QMPClient("judge")
        await qmp.connect(str(vm.qmp_path))
        with pytest.raises(ExecuteError) as e:
            await qmp.execute("cont", {"bogus": 1})
        status = await qmp.execute("query-status")
        await qmp.execute("quit")
        await hang_up(qmp)
        return e.value.error_class, status

    cls, status = run(go())
    assert cls == "GenericError" and status["status"] == "running"
    assert vm.end() == 0
    seen = counts(vm.console)
    assert seen == list(range(1, len(seen) + 1))


def test_qmp_shell_unmodified(vm):
    vm.wait_running()
    shell = Path(sys.executable).with_name("qmp-shell")
    r = subprocess.run(
        [str(shell), str(vm.qmp_path)],
        input="query-status\nstop\nquery-status\ncont\nquery-version\nquit\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "'status': 'paused'" in r.stdout or '"status": "paused"' in r.stdout, r.stdout
    assert "kvmlite" in r.stdout
    assert vm.end() == 0


def test_system_powerdown_raises_the_sci_of_the_power_button(tmp_path_factory, short_tmp):
    from kvmlite.testing.guests import GUEST_DIR, build_guest

    from .vmrig import HERE

    guest = build_guest(HERE / "sci.c", tmp_path_factory.mktemp("sci"), kind="pvh",
                        kit_dir=GUEST_DIR)  # fmt: skip
    qmp_path = short_tmp / "q.sock"
    vm = KvmliteVm(guest, short_tmp, "--qmp", f"unix:{qmp_path}", vm_id="sci")
    try:
        vm.wait_running()
        poll("the guest to arm", lambda: "armed" in vm.console.read_text())

        async def go():
            qmp = QMPClient("judge")
            events = EventListener()
            qmp.register_listener(events)
            await qmp.connect(str(qmp_path))
            await qmp.execute("system_powerdown")
            got = [(await events.get())["event"], await events.get()]
            await hang_up(qmp)
            return got

        powerdown, shutdown = run(go())
        assert powerdown == "POWERDOWN"
        assert shutdown["data"] == {"guest": True, "reason": "guest-shutdown"}
        assert vm.end() == 0
        assert "sci ok" in vm.console.read_text()
    finally:
        vm.close()

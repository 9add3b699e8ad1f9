"""Machine state save/restore on /dev/kvm (kvmlite/vmm/persist.py), in one process.

A counting guest is paused, its state saved and serialised, a second machine is
assembled from the same config, given the first one's memory and the state,
and started: its count goes on from where the first stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from kvmlite import state as serial
from kvmlite.errors import StateError
from kvmlite.kvm.state import VcpuState
from kvmlite.kvm.structs import KvmPitState2
from kvmlite.vmm.builder import assemble, build_vm, restore
from kvmlite.vmm.machine import ExitReason, Machine
from kvmlite.vmm.persist import MachineState, PartState, save_machine
from vmm.counting import assert_one_count, counter_config, wait_for_lines

pytestmark = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)

IA32_TSC = 0x10


def timeless(state: MachineState) -> MachineState:
    """``state`` without what moves with the host's clock while a machine sits
    paused (the TSC, kvmclock, the PIT's load times in host ktime, the ACPI PM
    timer): the rest must be identical."""
    vcpus = tuple(
        dataclasses.replace(v, msrs={k: x for k, x in v.msrs.items() if k != IA32_TSC})
        for v in state.vcpus
    )
    devices = tuple(
        dataclasses.replace(d, state=json.dumps({**json.loads(d.state), "timer_ticks": 0}))
        if d.kind == "AcpiPm"
        else d
        for d in state.devices
    )
    pit = KvmPitState2.from_buffer_copy(state.vm.pit2)
    for i in range(len(pit.channels)):
        pit.channels[i].count_load_time = 0
    vm = dataclasses.replace(state.vm, clock=b"", pit2=bytes(pit))
    return dataclasses.replace(state, vcpus=vcpus, vm=vm, devices=devices)


def copy_memory(src: Machine, dst: Machine) -> None:
    for a, b in zip(src.memory.regions, dst.memory.regions, strict=True):
        b.buf[:] = a.buf


def stop(machine: Machine) -> None:
    machine.request_exit(ExitReason.QUIT, message="test done")
    machine.wait(10)
    machine.close()


@pytest.mark.parametrize("cpus", [1, 2])
def test_restored_machine_counts_on(tmp_path: Path, cpus: int) -> None:
    con_a, con_b = tmp_path / "a.txt", tmp_path / "b.txt"
    a = build_vm(counter_config(tmp_path, con_a, cpus=cpus))
    try:
        a.start()
        wait_for_lines(con_a, 3)
        a.pause()
        blob = serial.dumps(save_machine(a))
        b = assemble(counter_config(tmp_path, con_b, cpus=cpus))
        try:
            copy_memory(a, b)
            saved = serial.loads(MachineState, blob)
            restore(b, saved)
            # snapshot -> restore -> snapshot: the same state, byte for byte.
            assert serial.dumps(timeless(save_machine(b))) == serial.dumps(timeless(saved))
            b.start()
            wait_for_lines(con_b, 3)
            b.pause()
            assert_one_count(con_a.read_text(), con_b.read_text())
        finally:
            stop(b)
    finally:
        stop(a)


def test_state_of_another_config_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    a = build_vm(counter_config(tmp_path, tmp_path / "a.txt"))
    try:
        saved = save_machine(a)  # never started: also allowed
    finally:
        a.close()
    b = assemble(counter_config(tmp_path, tmp_path / "b.txt", cpus=2))
    try:
        before = serial.dumps(timeless(save_machine(b)))
        with pytest.raises(StateError, match="vCPUs"):
            restore(b, saved)
        bigger = dataclasses.replace(saved, memory_size=saved.memory_size * 2)
        with pytest.raises(StateError, match="MiB"):
            restore(b, bigger)
        two = dataclasses.replace(saved, vcpus=(*saved.vcpus, _renumbered(saved.vcpus[0], 1)))
        odd = dataclasses.replace(
            two, devices=(*two.devices, PartState("disk9", "VirtioBlock", "{}"))
        )
        with pytest.raises(StateError, match="devices"):
            restore(b, odd)
        assert serial.dumps(timeless(save_machine(b))) == before
    finally:
        b.close()


def _renumbered(v: VcpuState, index: int) -> VcpuState:
    return dataclasses.replace(v, index=index)


def test_running_machine_is_not_saved(tmp_path: Path) -> None:
    a = build_vm(counter_config(tmp_path, tmp_path / "a.txt"))
    try:
        a.start()
        with pytest.raises(StateError, match="paused"):
            save_machine(a)
        assert a.state.value == "Running"
    finally:
        stop(a)


def test_restore_asks_each_nic_to_announce_itself() -> None:
    from types import SimpleNamespace

    from devices.virtio.test_virtio_net import make  # tests/devices/virtio

    from kvmlite.devices.virtio.net import VIRTIO_NET_S_ANNOUNCE
    from kvmlite.vmm.devices import DeviceManager
    from kvmlite.vmm.persist import announce_nics

    nic, *_ = make()  # activated, GUEST_ANNOUNCE negotiated
    devices = DeviceManager()
    devices.add("net0", nic)
    announce_nics(SimpleNamespace(devices=devices))  # type: ignore[arg-type]
    status = int.from_bytes(nic.read_config(6, 2), "little")
    assert nic.announce_pending and status & VIRTIO_NET_S_ANNOUNCE


def test_a_machine_with_cdroms_saves_each_part_once_and_restores(tmp_path: Path) -> None:
    """The SCSI adapter is the transport of every LUN entry as well as an entry of
    its own: its state (with any in-flight request) is saved and loaded once."""
    from kvmlite.config.cdrom import CdromConfig

    iso_dir = tmp_path / "disc"
    iso_dir.mkdir()
    (iso_dir / "readme.txt").write_text("hello\n")

    def config(console: Path):  # noqa: ANN202
        return dataclasses.replace(
            counter_config(tmp_path, console),
            cdroms=(CdromConfig(str(iso_dir)), CdromConfig("")),
        )

    con_a, con_b = tmp_path / "a.txt", tmp_path / "b.txt"
    a = build_vm(config(con_a))
    try:
        a.start()
        wait_for_lines(con_a, 2)
        a.pause()
        saved = save_machine(a)
        kinds = [p.kind for p in saved.devices + saved.transports]
        assert kinds.count("VirtioScsi") == 1
        b = assemble(config(con_b))
        try:
            copy_memory(a, b)
            restore(b, serial.loads(MachineState, serial.dumps(saved)))
            b.start()
            wait_for_lines(con_b, 2)
            b.pause()
            assert_one_count(con_a.read_text(), con_b.read_text())
        finally:
            stop(b)
    finally:
        stop(a)

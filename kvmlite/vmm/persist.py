"""A machine's state, and the one order in which it is saved and restored.

Theory of operation
-------------------
``save_machine(machine)`` needs the vCPUs out of KVM_RUN (the machine paused,
or never started) and collects, in this order:

1. every vCPU (kvmlite/kvm/state.py ``save_vcpu``: registers, FPU/XSAVE,
   MSRs with TSC and kvmclock, LAPIC, events, MP state);
2. the VM's in-kernel irqchip (PIC pair, IOAPIC), PIT and kvmclock;
3. every device of ``machine.devices``, in the device manager's order, after
   draining the ones with requests in flight (a virtio-blk request in the
   executor completes first, so none has to be re-submitted);
4. every transport (virtio-pci, virtio-mmio), in the same order.

``restore_machine(machine, state)`` applies a state to a machine that
``assemble(config)`` built from the same config, with its vCPUs not started.
The irqchip, PIT and clock go first and the vCPUs next, so that what the
devices do when restored (a UART raising its IRQ line, an ACPI SCI) lands
on restored interrupt controllers; the transports come last, because a
transport restored at DRIVER_OK re-activates its device, which may then
use its queues and raise MSIs at once. Last, each virtio-net device asks
its guest to announce itself (its peers learn the MAC again). Each device is identified by its id
and its model's class: a snapshot from another config is refused before
anything is changed (``check_matches``).

The states are the devices' own frozen dataclasses
(``Persist.save() -> State``); ``MachineState`` keeps each serialised
(kvmlite/state.py) and rebuilds it with the State type
its device's ``save`` declares, so a snapshot never contains code.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvmlite.devices.persist import Persist
from kvmlite.errors import StateError
from kvmlite.kvm.state import VcpuState, VmState, restore_vcpu, restore_vm, save_vcpu, save_vm
from kvmlite.state import dumps, loads

if TYPE_CHECKING:
    from kvmlite.vmm.devices import DeviceEntry
    from kvmlite.vmm.machine import Machine

#: How long a device may take to finish its requests in flight at save time.
DRAIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PartState:
    """One device's (or one transport's) state: ``state`` is its State serialised
    (kvmlite/state.py ``dumps``), decoded with the type its ``save`` declares."""

    id: str
    kind: str
    state: str


@dataclass(frozen=True)
class MachineState:
    memory_size: int
    vcpus: tuple[VcpuState, ...]
    vm: VmState
    devices: tuple[PartState, ...]
    transports: tuple[PartState, ...]


_STATE_TYPES: dict[type, type] = {}


def state_type(part: Persist[Any]) -> type:
    """The State dataclass ``part.save()`` returns (from its type hints, resolved
    once per class: that costs about a millisecond)."""
    cls = type(part)
    found = _STATE_TYPES.get(cls)
    if found is None:
        hint = typing.get_type_hints(cls.save).get("return")
        if not isinstance(hint, type):
            raise StateError(f"{cls.__name__}.save() declares no State type")
        found = _STATE_TYPES[cls] = hint
    return found


def _parts(machine: Machine) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Any, Any]]]:
    """(id, object, entry) of every stateful device, then of every stateful transport.

    Each object once: entries may share one (a SCSI adapter is the transport of
    every LUN entry and an entry of its own), and its state is saved and loaded
    (in-flight requests re-submitted) exactly once, at its first entry."""
    devices: list[tuple[str, Any, Any]] = []
    transports: list[tuple[str, Any, Any]] = []
    seen: set[int] = set()
    for entry in machine.devices:
        for obj, parts in ((entry.model, devices), (entry.transport, transports)):
            if isinstance(obj, Persist) and id(obj) not in seen:
                seen.add(id(obj))
                parts.append((entry.id, obj, entry))
    return devices, transports


def _save_part(id: str, part: Any, entry: DeviceEntry[Any]) -> PartState:
    with entry.locked():  # what a vCPU's register access holds
        return PartState(id, type(part).__name__, dumps(part.save()).decode())


def save_machine(machine: Machine) -> MachineState:
    """The whole machine's state (see the module docstring); vCPUs must be paused."""
    if machine.state.value == "Running":
        raise StateError("the machine must be paused to save its state")
    vcpus = tuple(save_vcpu(v) for v in machine.vcpus)
    vm = save_vm(machine.vm)
    devices, transports = _parts(machine)
    for id, model, _ in devices:
        drain = getattr(model, "drain", None)
        if drain is not None and not drain(DRAIN_TIMEOUT_S):
            raise StateError(f"{id}: requests still in flight after {DRAIN_TIMEOUT_S:.0f} s")
    return MachineState(
        memory_size=machine.memory.size,
        vcpus=vcpus,
        vm=vm,
        devices=tuple(_save_part(*p) for p in devices),
        transports=tuple(_save_part(*p) for p in transports),
    )


def _decode(parts: list[tuple[str, Any, Any]], saved: tuple[PartState, ...], what: str) -> list:
    have = [(id, type(obj).__name__) for id, obj, _ in parts]
    want = [(p.id, p.kind) for p in saved]
    if have != want:
        raise StateError(
            f"the snapshot's {what} {want} differ from this machine's {have}:"
            " restore with the configuration the snapshot was taken from"
        )
    return [_load_part(state_type(obj), p) for (_, obj, _), p in zip(parts, saved, strict=True)]


def _load_part(cls: type, part: PartState) -> Any:
    try:
        return loads(cls, part.state.encode())
    except StateError as e:
        raise StateError(f"{part.id}: {e}") from None


def check_matches(machine: Machine, state: MachineState) -> tuple[list, list]:
    """Refuse a state that does not fit ``machine``; the decoded device and
    transport states if it does. Changes nothing."""
    if state.memory_size != machine.memory.size:
        raise StateError(
            f"the snapshot has {state.memory_size >> 20} MiB of guest memory, this machine"
            f" {machine.memory.size >> 20} MiB"
        )
    if [v.index for v in state.vcpus] != [v.index for v in machine.vcpus]:
        raise StateError(
            f"the snapshot has {len(state.vcpus)} vCPUs, this machine {len(machine.vcpus)}"
        )
    devices, transports = _parts(machine)
    return _decode(devices, state.devices, "devices"), _decode(
        transports, state.transports, "transports"
    )


def restore_machine(machine: Machine, state: MachineState) -> None:
    """Apply ``state`` to a freshly assembled, not started machine (module docstring)."""
    if machine.state.value != "Not started":
        raise StateError("a state can only be restored into a machine that has not started")
    device_states, transport_states = check_matches(machine, state)
    restore_vm(machine.vm, state.vm)
    for vcpu, vs in zip(machine.vcpus, state.vcpus, strict=True):
        restore_vcpu(vcpu, vs)
    devices, transports = _parts(machine)
    for (_, obj, entry), st in [
        *zip(devices, device_states, strict=True),
        *zip(transports, transport_states, strict=True),
    ]:
        with entry.locked():
            obj.load_state(st)
    announce_nics(machine)


def announce_nics(machine: Machine) -> None:
    """Ask every restored NIC's guest to announce itself (VIRTIO_NET_S_ANNOUNCE,
    a gratuitous ARP), so that peers and switches learn its MAC again; a guest
    that did not negotiate VIRTIO_NET_F_GUEST_ANNOUNCE is not asked."""
    from kvmlite.devices.virtio.net import VirtioNet  # noqa: PLC0415

    for entry in machine.devices.of_type(VirtioNet):
        with entry.locked():
            entry.model.announce()

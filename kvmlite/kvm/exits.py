"""Typed results of ``Vcpu.run()``: one small class per KVM exit reason kvmlite handles.

Field meanings follow Documentation/virt/kvm/api.rst, section 5 ("The kvm_run structure").
``IoExit.data`` and ``MmioExit.data`` are views into the vCPU's kvm_run page: read OUT /
write data from them, and fill IN / read data in place before the next ``run()``, which is
when KVM copies it into the guest. They are only valid until that next ``run()``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class IoExit:
    """KVM_EXIT_IO: ``count`` accesses of ``size`` bytes at ``port`` (count > 1: rep ins/outs)."""

    port: int
    size: int
    is_write: bool
    count: int
    data: memoryview


@dataclass(slots=True, eq=False)
class MmioExit:
    """KVM_EXIT_MMIO: an access of ``length`` (1..8) bytes at guest-physical ``address``."""

    address: int
    length: int
    is_write: bool
    data: memoryview


@dataclass(slots=True, frozen=True)
class HltExit:
    """KVM_EXIT_HLT: the guest halted (only without an in-kernel irqchip)."""


@dataclass(slots=True, frozen=True)
class ShutdownExit:
    """KVM_EXIT_SHUTDOWN: a triple fault (or the guest asked for one to reset)."""


@dataclass(slots=True, frozen=True)
class FailEntryExit:
    """KVM_EXIT_FAIL_ENTRY: the hardware refused to enter the guest (bad vCPU state)."""

    hardware_entry_failure_reason: int
    cpu: int


@dataclass(slots=True, frozen=True)
class InternalErrorExit:
    """KVM_EXIT_INTERNAL_ERROR; ``suberror`` is a KVM_INTERNAL_ERROR_* value."""

    suberror: int
    data: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class SystemEventExit:
    """KVM_EXIT_SYSTEM_EVENT; ``type`` is KVM_SYSTEM_EVENT_SHUTDOWN/RESET/CRASH/..."""

    type: int
    flags: int


@dataclass(slots=True, frozen=True)
class IntrExit:
    """KVM_RUN returned EINTR: a signal or ``immediate_exit`` stopped the vCPU."""


@dataclass(slots=True, frozen=True)
class DebugExit:
    """KVM_EXIT_DEBUG: a guest-debug event (single step, breakpoint)."""

    exception: int
    pc: int
    dr6: int
    dr7: int


@dataclass(slots=True, frozen=True)
class UnknownExit:
    """Any other exit reason (KVM_EXIT_UNKNOWN carries the hardware reason)."""

    reason: int
    hardware_exit_reason: int = 0


Exit = (
    IoExit
    | MmioExit
    | HltExit
    | ShutdownExit
    | FailEntryExit
    | InternalErrorExit
    | SystemEventExit
    | IntrExit
    | DebugExit
    | UnknownExit
)

HLT = HltExit()
SHUTDOWN = ShutdownExit()
INTR = IntrExit()

"""Saved state of vCPUs and of the VM's in-kernel devices (DESIGN.md rule 4).

A ``VcpuState`` holds every piece of architectural state KVM keeps for a
vCPU (api.rst: KVM_GET_REGS, _SREGS, _FPU, _XSAVE, _XCRS, _LAPIC,
_VCPU_EVENTS, _DEBUGREGS, _MP_STATE, _MSRS); a ``VmState`` the in-kernel
PIC pair, IOAPIC, PIT and kvmclock. Kernel structs are kept as their raw
bytes, which is what KVM hands back: their layout is the kernel ABI, checked
by tests/kvm/test_structs.py, so the bytes are as portable as the ABI.

Restore order matters (it is the order QEMU and Firecracker use): MP state
and sregs first, then regs, FPU/XSAVE/XCRS, MSRs, LAPIC, and the events last
so that a pending exception or interrupt lands on the restored registers.
The vCPUs must be paused (outside KVM_RUN) for both save and restore.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from kvmlite.errors import StateError
from kvmlite.kvm.structs import (
    KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
    KvmClockData,
    KvmDebugregs,
    KvmFpu,
    KvmIrqchip,
    KvmLapicState,
    KvmPitState2,
    KvmRegs,
    KvmSregs,
    KvmVcpuEvents,
    KvmXcrs,
    KvmXsave,
)

# MSRs a running Linux guest depends on beyond the registers: syscall entry,
# TSC, kvmclock and the paravirt features (Documentation/virt/kvm/x86/msr.rst).
SAVED_MSRS = (
    0x10,  # IA32_TSC
    0x174,
    0x175,
    0x176,  # SYSENTER_CS/ESP/EIP
    0x1A0,  # IA32_MISC_ENABLE
    0x277,  # IA32_PAT
    0x2FF,  # MTRRdefType
    0xC0000081,
    0xC0000082,
    0xC0000083,
    0xC0000084,  # STAR, LSTAR, CSTAR, SFMASK
    0xC0000102,  # KERNEL_GS_BASE
    0xC0000103,  # TSC_AUX
    0x4B564D00,
    0x4B564D01,  # MSR_KVM_WALL_CLOCK_NEW, MSR_KVM_SYSTEM_TIME_NEW
    0x4B564D02,
    0x4B564D03,
    0x4B564D04,  # ASYNC_PF_EN, STEAL_TIME, PV_EOI_EN
)


def _raw(struct: Any) -> bytes:
    return bytes(memoryview(struct).cast("B"))


def _load(cls: type[ctypes.Structure], data: bytes, what: str) -> Any:
    if len(data) != ctypes.sizeof(cls):
        raise StateError(f"{what}: {len(data)} bytes, expected {ctypes.sizeof(cls)}")
    return cls.from_buffer_copy(data)


@dataclass(frozen=True)
class VcpuState:
    index: int
    mp_state: int
    regs: bytes
    sregs: bytes
    fpu: bytes
    xsave: bytes
    xcrs: bytes
    lapic: bytes
    events: bytes
    debugregs: bytes
    msrs: dict[int, int]


def save_vcpu(vcpu: Any, msr_indices: tuple[int, ...] | None = None) -> VcpuState:
    """Read every piece of a paused vCPU's state."""
    supported = set(vcpu.vm.kvm.msr_index_list())
    wanted = [m for m in (msr_indices or SAVED_MSRS) if m in supported]
    return VcpuState(
        index=vcpu.index,
        mp_state=vcpu.get_mp_state(),
        regs=_raw(vcpu.get_regs()),
        sregs=_raw(vcpu.get_sregs()),
        fpu=_raw(vcpu.get_fpu()),
        xsave=_raw(vcpu.get_xsave()),
        xcrs=_raw(vcpu.get_xcrs()),
        lapic=_raw(vcpu.get_lapic()),
        events=_raw(vcpu.get_vcpu_events()),
        debugregs=_raw(vcpu.get_debugregs()),
        msrs=vcpu.get_msrs(wanted),
    )


def restore_vcpu(vcpu: Any, state: VcpuState) -> None:
    """Load ``state`` into a paused vCPU (same index, same CPUID)."""
    if state.index != vcpu.index:
        raise StateError(f"state of vCPU {state.index} cannot restore vCPU {vcpu.index}")
    vcpu.set_mp_state(state.mp_state)
    vcpu.set_sregs(_load(KvmSregs, state.sregs, "sregs"))
    vcpu.set_regs(_load(KvmRegs, state.regs, "regs"))
    vcpu.set_fpu(_load(KvmFpu, state.fpu, "fpu"))
    vcpu.set_xsave(_load(KvmXsave, state.xsave, "xsave"))
    vcpu.set_xcrs(_load(KvmXcrs, state.xcrs, "xcrs"))
    vcpu.set_msrs(state.msrs)
    vcpu.set_lapic(_load(KvmLapicState, state.lapic, "lapic"))
    vcpu.set_debugregs(_load(KvmDebugregs, state.debugregs, "debugregs"))
    vcpu.set_vcpu_events(_load(KvmVcpuEvents, state.events, "vcpu events"))


@dataclass(frozen=True)
class VmState:
    pic_master: bytes
    pic_slave: bytes
    ioapic: bytes
    pit2: bytes
    clock: bytes


def save_vm(vm: Any) -> VmState:
    """The in-kernel irqchip, PIT and kvmclock of a paused VM."""
    return VmState(
        pic_master=_raw(vm.get_irqchip(KVM_IRQCHIP_PIC_MASTER)),
        pic_slave=_raw(vm.get_irqchip(KVM_IRQCHIP_PIC_SLAVE)),
        ioapic=_raw(vm.get_irqchip(KVM_IRQCHIP_IOAPIC)),
        pit2=_raw(vm.get_pit2()),
        clock=_raw(vm.get_clock()),
    )


def restore_vm(vm: Any, state: VmState) -> None:
    chips = (
        (state.pic_master, KVM_IRQCHIP_PIC_MASTER),
        (state.pic_slave, KVM_IRQCHIP_PIC_SLAVE),
        (state.ioapic, KVM_IRQCHIP_IOAPIC),
    )
    for data, chip_id in chips:
        chip = _load(KvmIrqchip, data, "irqchip")
        if chip.chip_id != chip_id:
            raise StateError(f"irqchip state is for chip {chip.chip_id}, expected {chip_id}")
        vm.set_irqchip(chip)
    vm.set_pit2(_load(KvmPitState2, state.pit2, "pit2"))
    clock = _load(KvmClockData, state.clock, "clock")
    clock.flags = 0  # KVM_SET_CLOCK accepts only KVM_CLOCK_REALTIME among the GET flags
    vm.set_clock(clock)

"""x86 KVM ABI structures, as declared in ``<asm/kvm.h>`` (arch/x86/include/uapi/asm/kvm.h).

Class names are the C struct names in CamelCase (``struct kvm_regs`` -> ``KvmRegs``) and
field names are exactly the C ones, so code reads like the kernel's
Documentation/virt/kvm/api.rst (``sregs.cs.base``, ``regs.rip``). Anonymous nested structs
of the C header get private helper classes (``_VcpuEventsException``) under the C member
name. tests/kvm/test_structs.py compares every size and field offset with gcc's.

Flexible-array structs (``kvm_msrs``, ``kvm_cpuid2``, ``kvm_msr_list``) declare a
zero-length ``entries`` member like the header; ``kvmlite.kvm.structs.flex()`` builds the
sized variant an ioctl needs.
"""

from __future__ import annotations

import ctypes
from ctypes import c_int64, c_uint8, c_uint16, c_uint32, c_uint64

KVM_NR_INTERRUPTS = 256
KVM_APIC_REG_SIZE = 0x400
KVM_IOAPIC_NUM_PINS = 24
KVM_MAX_XCRS = 16
KVM_IRQCHIP_PIC_MASTER = 0
KVM_IRQCHIP_PIC_SLAVE = 1
KVM_IRQCHIP_IOAPIC = 2


class KvmRegs(ctypes.Structure):
    _fields_ = [
        (name, c_uint64)
        for name in (
            "rax rbx rcx rdx rsi rdi rsp rbp r8 r9 r10 r11 r12 r13 r14 r15 rip rflags".split()
        )
    ]


class KvmLapicState(ctypes.Structure):
    """The LAPIC register page. C declares ``char regs[1024]``; it is ``c_uint8`` here so
    that ``bytes(state.regs)`` is the whole page (a ctypes char array stops at a NUL)."""

    _fields_ = [("regs", c_uint8 * KVM_APIC_REG_SIZE)]

    def get_reg(self, offset: int) -> int:
        """The 32-bit register at ``offset`` (e.g. 0xF0 spurious-interrupt vector)."""
        return int.from_bytes(bytes(self.regs[offset : offset + 4]), "little")

    def set_reg(self, offset: int, value: int) -> None:
        self.regs[offset : offset + 4] = list(value.to_bytes(4, "little"))


class KvmSegment(ctypes.Structure):
    _fields_ = [
        ("base", c_uint64),
        ("limit", c_uint32),
        ("selector", c_uint16),
        ("type", c_uint8),
        ("present", c_uint8),
        ("dpl", c_uint8),
        ("db", c_uint8),
        ("s", c_uint8),
        ("l", c_uint8),
        ("g", c_uint8),
        ("avl", c_uint8),
        ("unusable", c_uint8),
        ("padding", c_uint8),
    ]


class KvmDtable(ctypes.Structure):
    _fields_ = [("base", c_uint64), ("limit", c_uint16), ("padding", c_uint16 * 3)]


_SEGMENTS = [(name, KvmSegment) for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")]
_CONTROL = [(name, c_uint64) for name in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")]


class KvmSregs(ctypes.Structure):
    _fields_ = [
        *_SEGMENTS,
        ("gdt", KvmDtable),
        ("idt", KvmDtable),
        *_CONTROL,
        ("interrupt_bitmap", c_uint64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class KvmSregs2(ctypes.Structure):
    _fields_ = [
        *_SEGMENTS,
        ("gdt", KvmDtable),
        ("idt", KvmDtable),
        *_CONTROL,
        ("flags", c_uint64),
        ("pdptrs", c_uint64 * 4),
    ]


class KvmFpu(ctypes.Structure):
    _fields_ = [
        ("fpr", (c_uint8 * 16) * 8),
        ("fcw", c_uint16),
        ("fsw", c_uint16),
        ("ftwx", c_uint8),
        ("pad1", c_uint8),
        ("last_opcode", c_uint16),
        ("last_ip", c_uint64),
        ("last_dp", c_uint64),
        ("xmm", (c_uint8 * 16) * 16),
        ("mxcsr", c_uint32),
        ("pad2", c_uint32),
    ]


class KvmMsrEntry(ctypes.Structure):
    _fields_ = [("index", c_uint32), ("reserved", c_uint32), ("data", c_uint64)]


class KvmMsrs(ctypes.Structure):
    _fields_ = [("nmsrs", c_uint32), ("pad", c_uint32), ("entries", KvmMsrEntry * 0)]


class KvmMsrList(ctypes.Structure):
    _fields_ = [("nmsrs", c_uint32), ("indices", c_uint32 * 0)]


class KvmCpuidEntry2(ctypes.Structure):
    _fields_ = [
        ("function", c_uint32),
        ("index", c_uint32),
        ("flags", c_uint32),
        ("eax", c_uint32),
        ("ebx", c_uint32),
        ("ecx", c_uint32),
        ("edx", c_uint32),
        ("padding", c_uint32 * 3),
    ]


KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1 << 0


class KvmCpuid2(ctypes.Structure):
    _fields_ = [("nent", c_uint32), ("padding", c_uint32), ("entries", KvmCpuidEntry2 * 0)]


class KvmPicState(ctypes.Structure):
    _fields_ = [
        (name, c_uint8)
        for name in (
            "last_irr irr imr isr priority_add irq_base read_reg_select poll special_mask "
            "init_state auto_eoi rotate_on_auto_eoi special_fully_nested_mode init4 "
            "elcr elcr_mask"
        ).split()
    ]


class _IoapicRedirFields(ctypes.Structure):
    _fields_ = [
        ("vector", c_uint8),
        ("delivery_mode", c_uint8, 3),
        ("dest_mode", c_uint8, 1),
        ("delivery_status", c_uint8, 1),
        ("polarity", c_uint8, 1),
        ("remote_irr", c_uint8, 1),
        ("trig_mode", c_uint8, 1),
        ("mask", c_uint8, 1),
        ("reserve", c_uint8, 7),
        ("reserved", c_uint8 * 4),
        ("dest_id", c_uint8),
    ]


class _IoapicRedirEntry(ctypes.Union):
    _fields_ = [("bits", c_uint64), ("fields", _IoapicRedirFields)]


class KvmIoapicState(ctypes.Structure):
    _fields_ = [
        ("base_address", c_uint64),
        ("ioregsel", c_uint32),
        ("id", c_uint32),
        ("irr", c_uint32),
        ("pad", c_uint32),
        ("redirtbl", _IoapicRedirEntry * KVM_IOAPIC_NUM_PINS),
    ]


class KvmPitChannelState(ctypes.Structure):
    _fields_ = [
        ("count", c_uint32),
        ("latched_count", c_uint16),
        ("count_latched", c_uint8),
        ("status_latched", c_uint8),
        ("status", c_uint8),
        ("read_state", c_uint8),
        ("write_state", c_uint8),
        ("write_latch", c_uint8),
        ("rw_mode", c_uint8),
        ("mode", c_uint8),
        ("bcd", c_uint8),
        ("gate", c_uint8),
        ("count_load_time", c_int64),
    ]


class KvmPitState2(ctypes.Structure):
    _fields_ = [
        ("channels", KvmPitChannelState * 3),
        ("flags", c_uint32),
        ("reserved", c_uint32 * 9),
    ]


class KvmDebugExitArch(ctypes.Structure):
    _fields_ = [
        ("exception", c_uint32),
        ("pad", c_uint32),
        ("pc", c_uint64),
        ("dr6", c_uint64),
        ("dr7", c_uint64),
    ]


class _VcpuEventsException(ctypes.Structure):
    _fields_ = [
        ("injected", c_uint8),
        ("nr", c_uint8),
        ("has_error_code", c_uint8),
        ("pending", c_uint8),
        ("error_code", c_uint32),
    ]


class _VcpuEventsInterrupt(ctypes.Structure):
    _fields_ = [(n, c_uint8) for n in ("injected", "nr", "soft", "shadow")]


class _VcpuEventsNmi(ctypes.Structure):
    _fields_ = [(n, c_uint8) for n in ("injected", "pending", "masked", "pad")]


class _VcpuEventsSmi(ctypes.Structure):
    _fields_ = [(n, c_uint8) for n in ("smm", "pending", "smm_inside_nmi", "latched_init")]


class _VcpuEventsTripleFault(ctypes.Structure):
    _fields_ = [("pending", c_uint8)]


KVM_VCPUEVENT_VALID_NMI_PENDING = 0x01
KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x02
KVM_VCPUEVENT_VALID_SHADOW = 0x04
KVM_VCPUEVENT_VALID_SMM = 0x08


class KvmVcpuEvents(ctypes.Structure):
    _fields_ = [
        ("exception", _VcpuEventsException),
        ("interrupt", _VcpuEventsInterrupt),
        ("nmi", _VcpuEventsNmi),
        ("sipi_vector", c_uint32),
        ("flags", c_uint32),
        ("smi", _VcpuEventsSmi),
        ("triple_fault", _VcpuEventsTripleFault),
        ("reserved", c_uint8 * 26),
        ("exception_has_payload", c_uint8),
        ("exception_payload", c_uint64),
    ]


class KvmDebugregs(ctypes.Structure):
    _fields_ = [
        ("db", c_uint64 * 4),
        ("dr6", c_uint64),
        ("dr7", c_uint64),
        ("flags", c_uint64),
        ("reserved", c_uint64 * 9),
    ]


class KvmXsave(ctypes.Structure):
    _fields_ = [("region", c_uint32 * 1024), ("extra", c_uint32 * 0)]


class KvmXcr(ctypes.Structure):
    _fields_ = [("xcr", c_uint32), ("reserved", c_uint32), ("value", c_uint64)]


class KvmXcrs(ctypes.Structure):
    _fields_ = [
        ("nr_xcrs", c_uint32),
        ("flags", c_uint32),
        ("xcrs", KvmXcr * KVM_MAX_XCRS),
        ("padding", c_uint64 * 16),
    ]


class KvmSyncRegs(ctypes.Structure):
    _fields_ = [("regs", KvmRegs), ("sregs", KvmSregs), ("events", KvmVcpuEvents)]

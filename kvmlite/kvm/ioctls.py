"""KVM ioctl request numbers, computed like ``<asm-generic/ioctl.h>`` does.

``_IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr`` with the sizes
taken from the ctypes structs, so a wrong struct shows up as a wrong number too.
The list follows include/uapi/linux/kvm.h ("ioctls for /dev/kvm fds", "... VM fds",
"... vcpu fds"); tests/kvm/test_structs.py checks each value against gcc.
"""

from __future__ import annotations

import ctypes

from kvmlite.kvm import structs as s

_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2
KVMIO = 0xAE


def _IOC(direction: int, nr: int, size: int) -> int:  # noqa: N802 (C macro name)
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _IO(nr: int) -> int:  # noqa: N802
    return _IOC(_IOC_NONE, nr, 0)


def _IOR(nr: int, ctype: type) -> int:  # noqa: N802
    return _IOC(_IOC_READ, nr, ctypes.sizeof(ctype))


def _IOW(nr: int, ctype: type) -> int:  # noqa: N802
    return _IOC(_IOC_WRITE, nr, ctypes.sizeof(ctype))


def _IOWR(nr: int, ctype: type) -> int:  # noqa: N802
    return _IOC(_IOC_READ | _IOC_WRITE, nr, ctypes.sizeof(ctype))


# /dev/kvm
KVM_GET_API_VERSION = _IO(0x00)
KVM_CREATE_VM = _IO(0x01)
KVM_GET_MSR_INDEX_LIST = _IOWR(0x02, s.KvmMsrList)
KVM_CHECK_EXTENSION = _IO(0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(0x04)
KVM_GET_SUPPORTED_CPUID = _IOWR(0x05, s.KvmCpuid2)

# VM fd
KVM_CREATE_VCPU = _IO(0x41)
KVM_GET_DIRTY_LOG = _IOW(0x42, s.KvmDirtyLog)
KVM_SET_USER_MEMORY_REGION = _IOW(0x46, s.KvmUserspaceMemoryRegion)
KVM_SET_TSS_ADDR = _IO(0x47)
KVM_SET_IDENTITY_MAP_ADDR = _IOW(0x48, ctypes.c_uint64)
KVM_CREATE_IRQCHIP = _IO(0x60)
KVM_IRQ_LINE = _IOW(0x61, s.KvmIrqLevel)
KVM_GET_IRQCHIP = _IOWR(0x62, s.KvmIrqchip)
KVM_SET_IRQCHIP = _IOR(0x63, s.KvmIrqchip)
KVM_IRQ_LINE_STATUS = _IOWR(0x67, s.KvmIrqLevel)
KVM_SET_GSI_ROUTING = _IOW(0x6A, s.KvmIrqRouting)
KVM_IRQFD = _IOW(0x76, s.KvmIrqfd)
KVM_CREATE_PIT2 = _IOW(0x77, s.KvmPitConfig)
KVM_IOEVENTFD = _IOW(0x79, s.KvmIoeventfd)
KVM_SET_CLOCK = _IOW(0x7B, s.KvmClockData)
KVM_GET_CLOCK = _IOR(0x7C, s.KvmClockData)
KVM_GET_PIT2 = _IOR(0x9F, s.KvmPitState2)
KVM_SET_PIT2 = _IOW(0xA0, s.KvmPitState2)
KVM_SIGNAL_MSI = _IOW(0xA5, s.KvmMsi)

# vCPU fd
KVM_RUN = _IO(0x80)
KVM_GET_REGS = _IOR(0x81, s.KvmRegs)
KVM_SET_REGS = _IOW(0x82, s.KvmRegs)
KVM_GET_SREGS = _IOR(0x83, s.KvmSregs)
KVM_SET_SREGS = _IOW(0x84, s.KvmSregs)
KVM_TRANSLATE = _IOWR(0x85, s.KvmTranslation)
KVM_GET_MSRS = _IOWR(0x88, s.KvmMsrs)
KVM_SET_MSRS = _IOW(0x89, s.KvmMsrs)
KVM_GET_FPU = _IOR(0x8C, s.KvmFpu)
KVM_SET_FPU = _IOW(0x8D, s.KvmFpu)
KVM_GET_LAPIC = _IOR(0x8E, s.KvmLapicState)
KVM_SET_LAPIC = _IOW(0x8F, s.KvmLapicState)
KVM_SET_CPUID2 = _IOW(0x90, s.KvmCpuid2)
KVM_GET_CPUID2 = _IOWR(0x91, s.KvmCpuid2)
KVM_GET_MP_STATE = _IOR(0x98, s.KvmMpState)
KVM_SET_MP_STATE = _IOW(0x99, s.KvmMpState)
KVM_NMI = _IO(0x9A)
KVM_GET_VCPU_EVENTS = _IOR(0x9F, s.KvmVcpuEvents)
KVM_SET_VCPU_EVENTS = _IOW(0xA0, s.KvmVcpuEvents)
KVM_GET_DEBUGREGS = _IOR(0xA1, s.KvmDebugregs)
KVM_SET_DEBUGREGS = _IOW(0xA2, s.KvmDebugregs)
KVM_GET_XSAVE = _IOR(0xA4, s.KvmXsave)
KVM_SET_XSAVE = _IOW(0xA5, s.KvmXsave)
KVM_GET_XCRS = _IOR(0xA6, s.KvmXcrs)
KVM_SET_XCRS = _IOW(0xA7, s.KvmXcrs)
KVM_GET_SREGS2 = _IOR(0xCC, s.KvmSregs2)
KVM_SET_SREGS2 = _IOW(0xCD, s.KvmSregs2)

#: Every request number above, by its C name (the test compares them all with gcc's).
ALL: dict[str, int] = {k: v for k, v in dict(globals()).items() if k.startswith("KVM_")}

"""KVM ABI structures from ``<linux/kvm.h>``, plus the x86 ones re-exported.

Class names are the C struct names in CamelCase (``struct kvm_run`` -> ``KvmRun``), field
names exactly the C ones. Anonymous C unions are ctypes anonymous fields (``_u``), so
``run.io.port`` and ``log.dirty_bitmap`` read as in C. Spec: Documentation/virt/kvm/api.rst;
tests/kvm/test_structs.py checks every size and offset against gcc.
"""

from __future__ import annotations

import ctypes
from ctypes import c_char, c_int32, c_uint8, c_uint16, c_uint32, c_uint64, c_void_p
from functools import cache
from typing import Any

from kvmlite.kvm.structs_x86 import *  # noqa: F403  (one namespace, like <linux/kvm.h>)
from kvmlite.kvm.structs_x86 import (
    KvmDebugExitArch,
    KvmIoapicState,
    KvmPicState,
    KvmSyncRegs,
)

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1


class KvmUserspaceMemoryRegion(ctypes.Structure):
    _fields_ = [
        ("slot", c_uint32),
        ("flags", c_uint32),
        ("guest_phys_addr", c_uint64),
        ("memory_size", c_uint64),
        ("userspace_addr", c_uint64),
    ]


class _IrqLevelU(ctypes.Union):
    _fields_ = [("irq", c_uint32), ("status", c_int32)]


class KvmIrqLevel(ctypes.Structure):
    _anonymous_ = ("_u",)
    _fields_ = [("_u", _IrqLevelU), ("level", c_uint32)]


class _IrqchipChip(ctypes.Union):
    _fields_ = [("dummy", c_char * 512), ("pic", KvmPicState), ("ioapic", KvmIoapicState)]


class KvmIrqchip(ctypes.Structure):
    _fields_ = [("chip_id", c_uint32), ("pad", c_uint32), ("chip", _IrqchipChip)]


class KvmPitConfig(ctypes.Structure):
    _fields_ = [("flags", c_uint32), ("pad", c_uint32 * 15)]


KVM_PIT_SPEAKER_DUMMY = 1


class KvmTranslation(ctypes.Structure):
    _fields_ = [
        ("linear_address", c_uint64),
        ("physical_address", c_uint64),
        ("valid", c_uint8),
        ("writeable", c_uint8),
        ("usermode", c_uint8),
        ("pad", c_uint8 * 5),
    ]


class _DirtyLogU(ctypes.Union):
    _fields_ = [("dirty_bitmap", c_void_p), ("padding2", c_uint64)]


class KvmDirtyLog(ctypes.Structure):
    _anonymous_ = ("_u",)
    _fields_ = [("slot", c_uint32), ("padding1", c_uint32), ("_u", _DirtyLogU)]


class KvmMpState(ctypes.Structure):
    _fields_ = [("mp_state", c_uint32)]


KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_UNINITIALIZED = 1
KVM_MP_STATE_INIT_RECEIVED = 2
KVM_MP_STATE_HALTED = 3
KVM_MP_STATE_SIPI_RECEIVED = 4

KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
KVM_IOEVENTFD_FLAG_PIO = 1 << 1
KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2


class KvmIoeventfd(ctypes.Structure):
    _fields_ = [
        ("datamatch", c_uint64),
        ("addr", c_uint64),
        ("len", c_uint32),
        ("fd", c_int32),
        ("flags", c_uint32),
        ("pad", c_uint8 * 36),
    ]


KVM_IRQ_ROUTING_IRQCHIP = 1
KVM_IRQ_ROUTING_MSI = 2


class KvmIrqRoutingIrqchip(ctypes.Structure):
    _fields_ = [("irqchip", c_uint32), ("pin", c_uint32)]


class _RoutingMsiU(ctypes.Union):
    _fields_ = [("pad", c_uint32), ("devid", c_uint32)]


class KvmIrqRoutingMsi(ctypes.Structure):
    _anonymous_ = ("_u",)
    _fields_ = [
        ("address_lo", c_uint32),
        ("address_hi", c_uint32),
        ("data", c_uint32),
        ("_u", _RoutingMsiU),
    ]


class _RoutingEntryU(ctypes.Union):
    _fields_ = [
        ("irqchip", KvmIrqRoutingIrqchip),
        ("msi", KvmIrqRoutingMsi),
        ("pad", c_uint32 * 8),
    ]


class KvmIrqRoutingEntry(ctypes.Structure):
    _fields_ = [
        ("gsi", c_uint32),
        ("type", c_uint32),
        ("flags", c_uint32),
        ("pad", c_uint32),
        ("u", _RoutingEntryU),
    ]


class KvmIrqRouting(ctypes.Structure):
    _fields_ = [("nr", c_uint32), ("flags", c_uint32), ("entries", KvmIrqRoutingEntry * 0)]


KVM_IRQFD_FLAG_DEASSIGN = 1 << 0
KVM_IRQFD_FLAG_RESAMPLE = 1 << 1


class KvmIrqfd(ctypes.Structure):
    _fields_ = [
        ("fd", c_uint32),
        ("gsi", c_uint32),
        ("flags", c_uint32),
        ("resamplefd", c_uint32),
        ("pad", c_uint8 * 16),
    ]


KVM_CLOCK_TSC_STABLE = 2
KVM_CLOCK_REALTIME = 1 << 2
KVM_CLOCK_HOST_TSC = 1 << 3


class KvmClockData(ctypes.Structure):
    _fields_ = [
        ("clock", c_uint64),
        ("flags", c_uint32),
        ("pad0", c_uint32),
        ("realtime", c_uint64),
        ("host_tsc", c_uint64),
        ("pad", c_uint32 * 4),
    ]


class KvmMsi(ctypes.Structure):
    _fields_ = [
        ("address_lo", c_uint32),
        ("address_hi", c_uint32),
        ("data", c_uint32),
        ("flags", c_uint32),
        ("devid", c_uint32),
        ("pad", c_uint8 * 12),
    ]


# -- struct kvm_run and its exit union (api.rst section 5, "The kvm_run structure") -------


class _RunHw(ctypes.Structure):
    _fields_ = [("hardware_exit_reason", c_uint64)]


class _RunFailEntry(ctypes.Structure):
    _fields_ = [("hardware_entry_failure_reason", c_uint64), ("cpu", c_uint32)]


class _RunEx(ctypes.Structure):
    _fields_ = [("exception", c_uint32), ("error_code", c_uint32)]


KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1


class _RunIo(ctypes.Structure):
    _fields_ = [
        ("direction", c_uint8),
        ("size", c_uint8),
        ("port", c_uint16),
        ("count", c_uint32),
        ("data_offset", c_uint64),
    ]


class _RunDebug(ctypes.Structure):
    _fields_ = [("arch", KvmDebugExitArch)]


class _RunMmio(ctypes.Structure):
    _fields_ = [
        ("phys_addr", c_uint64),
        ("data", c_uint8 * 8),
        ("len", c_uint32),
        ("is_write", c_uint8),
    ]


class _RunHypercall(ctypes.Structure):
    _fields_ = [
        ("nr", c_uint64),
        ("args", c_uint64 * 6),
        ("ret", c_uint64),
        ("longmode", c_uint32),
        ("pad", c_uint32),
    ]


class _RunTprAccess(ctypes.Structure):
    _fields_ = [("rip", c_uint64), ("is_write", c_uint32), ("pad", c_uint32)]


class _RunInternal(ctypes.Structure):
    _fields_ = [("suberror", c_uint32), ("ndata", c_uint32), ("data", c_uint64 * 16)]


class _RunEmulationFailureInsn(ctypes.Structure):
    _fields_ = [("insn_size", c_uint8), ("insn_bytes", c_uint8 * 15)]


class _RunEmulationFailure(ctypes.Structure):
    _anonymous_ = ("_u",)
    _fields_ = [
        ("suberror", c_uint32),
        ("ndata", c_uint32),
        ("flags", c_uint64),
        ("_u", _RunEmulationFailureInsn),
    ]


KVM_SYSTEM_EVENT_SHUTDOWN = 1
KVM_SYSTEM_EVENT_RESET = 2
KVM_SYSTEM_EVENT_CRASH = 3
KVM_SYSTEM_EVENT_WAKEUP = 4
KVM_SYSTEM_EVENT_SUSPEND = 5
KVM_SYSTEM_EVENT_SEV_TERM = 6


class _RunSystemEventU(ctypes.Union):
    _fields_ = [("flags", c_uint64), ("data", c_uint64 * 16)]


class _RunSystemEvent(ctypes.Structure):
    _anonymous_ = ("_u",)
    _fields_ = [("type", c_uint32), ("ndata", c_uint32), ("_u", _RunSystemEventU)]


class _RunEoi(ctypes.Structure):
    _fields_ = [("vector", c_uint8)]


class _RunMsr(ctypes.Structure):
    _fields_ = [
        ("error", c_uint8),
        ("pad", c_uint8 * 7),
        ("reason", c_uint32),
        ("index", c_uint32),
        ("data", c_uint64),
    ]


class _RunNotify(ctypes.Structure):
    _fields_ = [("flags", c_uint32)]


class _RunExit(ctypes.Union):
    _fields_ = [
        ("hw", _RunHw),
        ("fail_entry", _RunFailEntry),
        ("ex", _RunEx),
        ("io", _RunIo),
        ("debug", _RunDebug),
        ("mmio", _RunMmio),
        ("hypercall", _RunHypercall),
        ("tpr_access", _RunTprAccess),
        ("internal", _RunInternal),
        ("emulation_failure", _RunEmulationFailure),
        ("system_event", _RunSystemEvent),
        ("eoi", _RunEoi),
        ("msr", _RunMsr),
        ("notify", _RunNotify),
        ("padding", c_char * 256),
    ]


SYNC_REGS_SIZE_BYTES = 2048


class _RunSyncRegs(ctypes.Union):
    _fields_ = [("regs", KvmSyncRegs), ("padding", c_char * SYNC_REGS_SIZE_BYTES)]


class KvmRun(ctypes.Structure):
    _anonymous_ = ("_u",)
    _fields_ = [
        ("request_interrupt_window", c_uint8),
        ("immediate_exit", c_uint8),
        ("padding1", c_uint8 * 6),
        ("exit_reason", c_uint32),
        ("ready_for_interrupt_injection", c_uint8),
        ("if_flag", c_uint8),
        ("flags", c_uint16),
        ("cr8", c_uint64),
        ("apic_base", c_uint64),
        ("_u", _RunExit),
        ("kvm_valid_regs", c_uint64),
        ("kvm_dirty_regs", c_uint64),
        ("s", _RunSyncRegs),
    ]


# -- flexible arrays ------------------------------------------------------------------


@cache
def flex(header: type[ctypes.Structure], n: int) -> type[ctypes.Structure]:
    """``header`` (a struct whose last member is a zero-length array) with room for ``n``.

    The result has the same leading fields, so ``obj.nmsrs``/``obj.entries[i]`` work, and
    its size is the C ``sizeof(header) + n * sizeof(entry)`` the ioctl reads or writes.
    """
    *lead, last = header._fields_
    name, array_type = last[0], last[1]
    entry: Any = array_type._type_  # type: ignore[union-attr]
    sized = type(
        f"{header.__name__}_{n}",
        (ctypes.Structure,),
        {"_fields_": [*lead, (name, entry * n)]},
    )
    return sized

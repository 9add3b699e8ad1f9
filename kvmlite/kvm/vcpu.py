"""``Vcpu``: a KVM vCPU file descriptor and its mmap'd ``kvm_run`` page (api.rst 4.10, 5).

Theory of operation
-------------------
``run()`` is the hot path: it runs once per trapped guest access. It calls
``fcntl.ioctl(fd, KVM_RUN)`` with no third argument (the cheapest form; the GIL is
released while the guest runs), then reads the exit reason and the exit's fields from the
shared kvm_run page with precompiled ``struct.Struct`` objects at offsets taken once from
``KvmRun`` (no ctypes object is built per exit). I/O data is handed out as a memoryview
slice of the page, so device models read OUT data and fill IN data in place.

Stopping a vCPU from another thread: set ``immediate_exit = True`` and send the vCPU
thread a signal that has a handler (``signal.pthread_kill``). Either the signal interrupts
a running KVM_RUN, or the flag makes the next KVM_RUN return at once; both give
``IntrExit``. The owner clears ``immediate_exit`` before running again.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from kvmlite.kvm import constants as c
from kvmlite.kvm import exits
from kvmlite.kvm import ioctls as nr
from kvmlite.kvm._ioctl import KvmIoctlError, ioctl
from kvmlite.kvm.structs import (
    KvmCpuid2,
    KvmCpuidEntry2,
    KvmDebugregs,
    KvmFpu,
    KvmLapicState,
    KvmMpState,
    KvmMsrEntry,
    KvmMsrs,
    KvmRegs,
    KvmRun,
    KvmSregs,
    KvmTranslation,
    KvmVcpuEvents,
    KvmXcrs,
    KvmXsave,
    _RunDebug,
    _RunFailEntry,
    _RunInternal,
    _RunIo,
    _RunMmio,
    _RunSystemEvent,
    flex,
)

if TYPE_CHECKING:
    from kvmlite.kvm.vm import Vm

_KVM_RUN = nr.KVM_RUN
_EXIT_IO = c.KVM_EXIT_IO
_EXIT_MMIO = c.KVM_EXIT_MMIO
_EXIT_HLT = c.KVM_EXIT_HLT

_EXIT_REASON_OFF = KvmRun.exit_reason.offset
_IMMEDIATE_EXIT_OFF = KvmRun.immediate_exit.offset
_UNION = KvmRun.io.offset  # every exit struct starts at the union
_IO = struct.Struct("=BBHIQ")  # direction, size, port, count, data_offset
# exit_reason and the io fields in one call: the common exit costs a single unpack.
_REASON_IO = struct.Struct(
    f"={_EXIT_REASON_OFF}xI{_UNION - _EXIT_REASON_OFF - 4}x" + _IO.format.lstrip("=")
)
_unpack_reason_io = _REASON_IO.unpack_from
_ioctl = fcntl.ioctl
_IoExit = exits.IoExit
_MmioExit = exits.MmioExit
_MMIO = struct.Struct("=Q8xIB")  # phys_addr, (data), len, is_write
_MMIO_DATA_OFF = _UNION + _RunMmio.data.offset
_FAIL_ENTRY = struct.Struct("=QI")
_INTERNAL_HDR = struct.Struct("=II")
_SYSTEM_EVENT = struct.Struct("=IIQ")
_DEBUG = struct.Struct("=I4xQQQ")
_HW = struct.Struct("=Q")

# The formats above must describe the C layout the structs were tested against.
assert _IO.size == ctypes.sizeof(_RunIo)
assert _REASON_IO.size == _UNION + _IO.size
assert (_RunMmio.len.offset, _RunMmio.is_write.offset, _MMIO.size) == (16, 20, 21)
assert _FAIL_ENTRY.size <= ctypes.sizeof(_RunFailEntry)
assert _RunInternal.data.offset == _INTERNAL_HDR.size
assert _RunSystemEvent.flags.offset == 8
assert _DEBUG.size == ctypes.sizeof(_RunDebug)


class Vcpu:
    """A vCPU; made by ``Vm.create_vcpu(index)``."""

    def __init__(self, vm: Vm, index: int, fd: int, mmap_size: int) -> None:
        self.vm = vm
        self.index = index
        self.fd = fd
        self._run = mmap.mmap(fd, mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._view = memoryview(self._run)

    # -- running ------------------------------------------------------------------

    def run(self) -> exits.Exit:
        """KVM_RUN until the next exit, returned as a typed exit object."""
        try:
            _ioctl(self.fd, _KVM_RUN)
        except InterruptedError:
            return exits.INTR
        except BlockingIOError:
            # EAGAIN: an AP blocked in KVM_MP_STATE_UNINITIALIZED was woken
            # (INIT/SIPI arrived); KVM expects KVM_RUN again, as after EINTR.
            return exits.INTR
        except OSError as e:
            raise KvmIoctlError(_KVM_RUN, e.errno or 0) from e
        # The io fields are only meaningful when reason is KVM_EXIT_IO.
        reason, direction, size, port, count, offset = _unpack_reason_io(self._run)
        if reason == _EXIT_IO:
            data = self._view[offset : offset + size * count]
            return _IoExit(port, size, direction == 1, count, data)
        run = self._run
        if reason == _EXIT_MMIO:
            address, length, is_write = _MMIO.unpack_from(run, _UNION)
            length = min(length, 8)
            data = self._view[_MMIO_DATA_OFF : _MMIO_DATA_OFF + length]
            return _MmioExit(address, length, bool(is_write), data)
        if reason == _EXIT_HLT:
            return exits.HLT
        return self._slow_exit(reason)

    def _slow_exit(self, reason: int) -> exits.Exit:
        run = self._run
        if reason == c.KVM_EXIT_SHUTDOWN:
            return exits.SHUTDOWN
        if reason == c.KVM_EXIT_INTR:
            return exits.INTR
        if reason == c.KVM_EXIT_FAIL_ENTRY:
            return exits.FailEntryExit(*_FAIL_ENTRY.unpack_from(run, _UNION))
        if reason == c.KVM_EXIT_INTERNAL_ERROR:
            suberror, ndata = _INTERNAL_HDR.unpack_from(run, _UNION)
            ndata = min(ndata, 16)
            data = struct.unpack_from(f"={ndata}Q", run, _UNION + _INTERNAL_HDR.size)
            return exits.InternalErrorExit(suberror, data)
        if reason == c.KVM_EXIT_SYSTEM_EVENT:
            type_, _ndata, flags = _SYSTEM_EVENT.unpack_from(run, _UNION)
            return exits.SystemEventExit(type_, flags)
        if reason == c.KVM_EXIT_DEBUG:
            return exits.DebugExit(*_DEBUG.unpack_from(run, _UNION))
        if reason == c.KVM_EXIT_UNKNOWN:
            return exits.UnknownExit(reason, _HW.unpack_from(run, _UNION)[0])
        return exits.UnknownExit(reason)

    @property
    def immediate_exit(self) -> bool:
        return bool(self._run[_IMMEDIATE_EXIT_OFF])

    @immediate_exit.setter
    def immediate_exit(self, value: bool) -> None:
        self._run[_IMMEDIATE_EXIT_OFF] = 1 if value else 0

    def run_struct(self) -> KvmRun:
        """A ctypes view of the whole kvm_run page (for rare fields; not for the hot path)."""
        return KvmRun.from_buffer(self._run)

    # -- registers and state -------------------------------------------------------

    def _get(self, code: int, cls: type) -> ctypes.Structure:
        obj = cls()
        ioctl(self.fd, code, obj)
        return obj

    def get_regs(self) -> KvmRegs:
        return self._get(nr.KVM_GET_REGS, KvmRegs)  # type: ignore[return-value]

    def set_regs(self, regs: KvmRegs) -> None:
        ioctl(self.fd, nr.KVM_SET_REGS, regs)

    def get_sregs(self) -> KvmSregs:
        return self._get(nr.KVM_GET_SREGS, KvmSregs)  # type: ignore[return-value]

    def set_sregs(self, sregs: KvmSregs) -> None:
        ioctl(self.fd, nr.KVM_SET_SREGS, sregs)

    def get_fpu(self) -> KvmFpu:
        return self._get(nr.KVM_GET_FPU, KvmFpu)  # type: ignore[return-value]

    def set_fpu(self, fpu: KvmFpu) -> None:
        ioctl(self.fd, nr.KVM_SET_FPU, fpu)

    def get_lapic(self) -> KvmLapicState:
        return self._get(nr.KVM_GET_LAPIC, KvmLapicState)  # type: ignore[return-value]

    def set_lapic(self, lapic: KvmLapicState) -> None:
        ioctl(self.fd, nr.KVM_SET_LAPIC, lapic)

    def get_xsave(self) -> KvmXsave:
        return self._get(nr.KVM_GET_XSAVE, KvmXsave)  # type: ignore[return-value]

    def set_xsave(self, xsave: KvmXsave) -> None:
        ioctl(self.fd, nr.KVM_SET_XSAVE, xsave)

    def get_xcrs(self) -> KvmXcrs:
        return self._get(nr.KVM_GET_XCRS, KvmXcrs)  # type: ignore[return-value]

    def set_xcrs(self, xcrs: KvmXcrs) -> None:
        ioctl(self.fd, nr.KVM_SET_XCRS, xcrs)

    def get_vcpu_events(self) -> KvmVcpuEvents:
        return self._get(nr.KVM_GET_VCPU_EVENTS, KvmVcpuEvents)  # type: ignore[return-value]

    def set_vcpu_events(self, events: KvmVcpuEvents) -> None:
        ioctl(self.fd, nr.KVM_SET_VCPU_EVENTS, events)

    def get_debugregs(self) -> KvmDebugregs:
        return self._get(nr.KVM_GET_DEBUGREGS, KvmDebugregs)  # type: ignore[return-value]

    def set_debugregs(self, debugregs: KvmDebugregs) -> None:
        ioctl(self.fd, nr.KVM_SET_DEBUGREGS, debugregs)

    def get_mp_state(self) -> int:
        """KVM_GET_MP_STATE: a KVM_MP_STATE_* value."""
        return self._get(nr.KVM_GET_MP_STATE, KvmMpState).mp_state

    def set_mp_state(self, mp_state: int) -> None:
        ioctl(self.fd, nr.KVM_SET_MP_STATE, KvmMpState(mp_state=mp_state))

    def get_msrs(self, indices: Iterable[int]) -> dict[int, int]:
        """KVM_GET_MSRS; raises KvmError naming the first MSR KVM could not read."""
        wanted = list(indices)
        buf = flex(KvmMsrs, len(wanted))(nmsrs=len(wanted))
        for i, index in enumerate(wanted):
            buf.entries[i].index = index
        got = ioctl(self.fd, nr.KVM_GET_MSRS, buf)
        if got < len(wanted):
            raise KvmIoctlError(nr.KVM_GET_MSRS, errno.EINVAL, f"MSR {wanted[got]:#x} unreadable")
        return {e.index: e.data for e in buf.entries}

    def set_msrs(self, values: Mapping[int, int]) -> None:
        """KVM_SET_MSRS; raises KvmError naming the first MSR KVM refused."""
        items = list(values.items())
        buf = flex(KvmMsrs, len(items))(nmsrs=len(items))
        for i, (index, data) in enumerate(items):
            buf.entries[i] = KvmMsrEntry(index=index, data=data)
        done = ioctl(self.fd, nr.KVM_SET_MSRS, buf)
        if done < len(items):
            index = items[done][0]
            raise KvmIoctlError(nr.KVM_SET_MSRS, errno.EINVAL, f"MSR {index:#x} refused")

    def set_cpuid2(self, entries: Iterable[KvmCpuidEntry2]) -> None:
        """KVM_SET_CPUID2: the CPUID leaves the guest sees (before the first run)."""
        entries = list(entries)
        buf = flex(KvmCpuid2, len(entries))(nent=len(entries))
        for i, e in enumerate(entries):
            buf.entries[i] = e
        ioctl(self.fd, nr.KVM_SET_CPUID2, buf, f"{len(entries)} entries")

    def translate(self, gva: int) -> int | None:
        """KVM_TRANSLATE a guest-virtual address with the vCPU's current paging; None if
        unmapped."""
        t = KvmTranslation(linear_address=gva)
        ioctl(self.fd, nr.KVM_TRANSLATE, t, f"{gva:#x}")
        return t.physical_address if t.valid else None

    def nmi(self) -> None:
        """KVM_NMI: queue an NMI for this vCPU."""
        ioctl(self.fd, nr.KVM_NMI)

    # -- lifetime ----------------------------------------------------------------

    def close(self) -> None:
        if self.fd < 0:
            return
        self._view.release()
        try:
            self._run.close()
        except BufferError:
            # An exit's data view is still referenced; the page goes with the last one.
            pass
        os.close(self.fd)
        self.fd = -1

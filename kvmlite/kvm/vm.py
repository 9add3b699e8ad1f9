"""``Vm``: a KVM virtual machine file descriptor (api.rst section 4, "vm ioctl"s).

Memory slots, the in-kernel interrupt controllers (PIC + IOAPIC) and PIT, interrupt
injection (irq_line, MSI, GSI routing, irqfd), ioeventfds, dirty logging, the kvmclock,
and vCPU creation. Everything is a thin, typed wrapper over one ioctl.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kvmlite.errors import ConfigError
from kvmlite.kvm import ioctls as nr
from kvmlite.kvm._ioctl import ioctl, ioctl_ulong
from kvmlite.kvm.structs import (
    KVM_IOEVENTFD_FLAG_DATAMATCH,
    KVM_IOEVENTFD_FLAG_DEASSIGN,
    KVM_IOEVENTFD_FLAG_PIO,
    KVM_IRQ_ROUTING_IRQCHIP,
    KVM_IRQ_ROUTING_MSI,
    KVM_IRQFD_FLAG_DEASSIGN,
    KVM_IRQFD_FLAG_RESAMPLE,
    KVM_PIT_SPEAKER_DUMMY,
    KvmClockData,
    KvmDirtyLog,
    KvmIoeventfd,
    KvmIrqchip,
    KvmIrqfd,
    KvmIrqLevel,
    KvmIrqRouting,
    KvmIrqRoutingEntry,
    KvmMsi,
    KvmPitConfig,
    KvmPitState2,
    KvmUserspaceMemoryRegion,
    flex,
)
from kvmlite.kvm.vcpu import Vcpu

if TYPE_CHECKING:
    from kvmlite.kvm.system import Kvm

PAGE_SIZE = 4096


def msi_route(gsi: int, address: int, data: int) -> KvmIrqRoutingEntry:
    """A GSI routing entry that sends the MSI (address, data) when ``gsi`` fires."""
    e = KvmIrqRoutingEntry(gsi=gsi, type=KVM_IRQ_ROUTING_MSI)
    e.u.msi.address_lo = address & 0xFFFFFFFF
    e.u.msi.address_hi = address >> 32
    e.u.msi.data = data
    return e


def irqchip_route(gsi: int, irqchip: int, pin: int) -> KvmIrqRoutingEntry:
    """A GSI routing entry to ``pin`` of KVM_IRQCHIP_PIC_MASTER/PIC_SLAVE/IOAPIC."""
    e = KvmIrqRoutingEntry(gsi=gsi, type=KVM_IRQ_ROUTING_IRQCHIP)
    e.u.irqchip.irqchip = irqchip
    e.u.irqchip.pin = pin
    return e


class Vm:
    """A VM file descriptor; made by ``Kvm.create_vm()``."""

    def __init__(self, kvm: Kvm, fd: int) -> None:
        self.kvm = kvm
        self.fd = fd
        self.vcpus: list[Vcpu] = []
        self._slot_sizes: dict[int, int] = {}

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION on the VM (some answers are per-VM, e.g. KVM_CAP_XSAVE2)."""
        return ioctl(self.fd, nr.KVM_CHECK_EXTENSION, cap)

    # -- memory --------------------------------------------------------------------

    def set_user_memory_region(
        self, slot: int, gpa: int, size: int, host_addr: int, flags: int = 0
    ) -> None:
        """KVM_SET_USER_MEMORY_REGION; ``size`` 0 deletes the slot."""
        region = KvmUserspaceMemoryRegion(
            slot=slot, flags=flags, guest_phys_addr=gpa, memory_size=size, userspace_addr=host_addr
        )
        ioctl(self.fd, nr.KVM_SET_USER_MEMORY_REGION, region, f"slot {slot} at {gpa:#x}")
        if size:
            self._slot_sizes[slot] = size
        else:
            self._slot_sizes.pop(slot, None)

    def get_dirty_log(self, slot: int, size: int) -> bytes:
        """KVM_GET_DIRTY_LOG: one bit per 4 KiB page of the ``size``-byte slot, LSB first.

        Reading it also clears it: the next call reports only pages written since.
        The slot must have been registered with KVM_MEM_LOG_DIRTY_PAGES.
        """
        slot_size = self._slot_sizes.get(slot)
        if slot_size is None or not 0 < size <= slot_size:
            raise ConfigError(
                f"dirty log of slot {slot}: size {size:#x} does not fit the slot "
                f"({'not registered' if slot_size is None else hex(slot_size)})"
            )
        pages = (size + PAGE_SIZE - 1) // PAGE_SIZE
        # The kernel writes the whole slot's bitmap in 64-bit words (api.rst 4.8), so
        # the buffer is sized from the registered slot, never from the caller's size.
        slot_pages = (slot_size + PAGE_SIZE - 1) // PAGE_SIZE
        bitmap = ctypes.create_string_buffer(((slot_pages + 63) // 64) * 8)
        log = KvmDirtyLog(slot=slot)
        log.dirty_bitmap = ctypes.addressof(bitmap)
        ioctl(self.fd, nr.KVM_GET_DIRTY_LOG, log, f"slot {slot}")
        return bitmap.raw[: (pages + 7) // 8]

    # -- interrupt controllers and timers ------------------------------------------

    def create_irqchip(self) -> None:
        """KVM_CREATE_IRQCHIP: in-kernel PIC pair, IOAPIC and a LAPIC per vCPU."""
        ioctl(self.fd, nr.KVM_CREATE_IRQCHIP)

    def create_pit2(self, flags: int = KVM_PIT_SPEAKER_DUMMY) -> None:
        """KVM_CREATE_PIT2 (after create_irqchip). SPEAKER_DUMMY also claims port 0x61."""
        ioctl(self.fd, nr.KVM_CREATE_PIT2, KvmPitConfig(flags=flags))

    def set_tss_addr(self, addr: int) -> None:
        """KVM_SET_TSS_ADDR: three pages of guest-physical space KVM may use (Intel)."""
        ioctl_ulong(self.fd, nr.KVM_SET_TSS_ADDR, addr, f"{addr:#x}")

    def set_identity_map_addr(self, addr: int) -> None:
        """KVM_SET_IDENTITY_MAP_ADDR: one page for the real-mode identity map (Intel)."""
        ioctl(self.fd, nr.KVM_SET_IDENTITY_MAP_ADDR, ctypes.c_uint64(addr), f"{addr:#x}")

    def irq_line(self, irq: int, level: int) -> None:
        """KVM_IRQ_LINE: set GSI ``irq`` to ``level`` (0/1) on the in-kernel irqchip."""
        ioctl(self.fd, nr.KVM_IRQ_LINE, KvmIrqLevel(irq=irq, level=level), f"irq {irq}")

    def set_gsi_routing(self, entries: Sequence[KvmIrqRoutingEntry]) -> None:
        """KVM_SET_GSI_ROUTING: replace the whole routing table with ``entries``."""
        n = len(entries)
        table = flex(KvmIrqRouting, n)(nr=n)
        for i, e in enumerate(entries):
            table.entries[i] = e
        ioctl(self.fd, nr.KVM_SET_GSI_ROUTING, table, f"{n} entries")

    def irqfd(
        self, fd: int, gsi: int, *, deassign: bool = False, resample_fd: int | None = None
    ) -> None:
        """KVM_IRQFD: writing to eventfd ``fd`` raises ``gsi`` without a trip through Python."""
        flags = KVM_IRQFD_FLAG_DEASSIGN if deassign else 0
        req = KvmIrqfd(fd=fd, gsi=gsi)
        if resample_fd is not None:
            flags |= KVM_IRQFD_FLAG_RESAMPLE
            req.resamplefd = resample_fd
        req.flags = flags
        ioctl(self.fd, nr.KVM_IRQFD, req, f"gsi {gsi}")

    def ioeventfd(
        self,
        fd: int,
        addr: int,
        length: int,
        *,
        datamatch: int | None = None,
        pio: bool = False,
        deassign: bool = False,
    ) -> None:
        """KVM_IOEVENTFD: a guest write to ``addr`` signals eventfd ``fd`` instead of exiting.

        ``length`` 0 matches a write of any size (MMIO only); ``datamatch`` limits it to
        writes of that value. Deassign with the same arguments and ``deassign=True``.
        """
        flags = 0
        if datamatch is not None:
            flags |= KVM_IOEVENTFD_FLAG_DATAMATCH
        if pio:
            flags |= KVM_IOEVENTFD_FLAG_PIO
        if deassign:
            flags |= KVM_IOEVENTFD_FLAG_DEASSIGN
        req = KvmIoeventfd(datamatch=datamatch or 0, addr=addr, len=length, fd=fd, flags=flags)
        ioctl(self.fd, nr.KVM_IOEVENTFD, req, f"{'port' if pio else 'mmio'} {addr:#x}")

    def signal_msi(self, address: int, data: int) -> int:
        """KVM_SIGNAL_MSI: inject one MSI; >0 delivered, 0 blocked by the guest."""
        msi = KvmMsi(address_lo=address & 0xFFFFFFFF, address_hi=address >> 32, data=data)
        return ioctl(self.fd, nr.KVM_SIGNAL_MSI, msi)

    # -- state (snapshot, migration) ----------------------------------------------

    def get_clock(self) -> KvmClockData:
        data = KvmClockData()
        ioctl(self.fd, nr.KVM_GET_CLOCK, data)
        return data

    def set_clock(self, data: KvmClockData) -> None:
        ioctl(self.fd, nr.KVM_SET_CLOCK, data)

    def get_irqchip(self, chip: int) -> KvmIrqchip:
        """KVM_GET_IRQCHIP for KVM_IRQCHIP_PIC_MASTER, PIC_SLAVE or IOAPIC."""
        state = KvmIrqchip(chip_id=chip)
        ioctl(self.fd, nr.KVM_GET_IRQCHIP, state, f"chip {chip}")
        return state

    def set_irqchip(self, state: KvmIrqchip) -> None:
        ioctl(self.fd, nr.KVM_SET_IRQCHIP, state, f"chip {state.chip_id}")

    def get_pit2(self) -> KvmPitState2:
        state = KvmPitState2()
        ioctl(self.fd, nr.KVM_GET_PIT2, state)
        return state

    def set_pit2(self, state: KvmPitState2) -> None:
        ioctl(self.fd, nr.KVM_SET_PIT2, state)

    # -- vCPUs and lifetime ------------------------------------------------------

    def create_vcpu(self, index: int) -> Vcpu:
        """KVM_CREATE_VCPU with vCPU id (= APIC id) ``index``, its kvm_run page mapped."""
        fd = ioctl(self.fd, nr.KVM_CREATE_VCPU, index, f"vcpu {index}")
        try:
            vcpu = Vcpu(self, index, fd, self.kvm.vcpu_mmap_size)
        except BaseException:
            os.close(fd)
            raise
        self.vcpus.append(vcpu)
        return vcpu

    def close(self) -> None:
        for vcpu in self.vcpus:
            vcpu.close()
        self.vcpus.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

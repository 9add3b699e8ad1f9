"""QEMU's test devices on a machine: ``kvmlite run --test-devices``.

Places the models of kvmlite/devices/legacy/isa_debug_exit.py and
pc_testdev.py where QEMU's ``-device pc-testdev -device
isa-debug-exit,iobase=0xf4,iosize=0x4`` (kvm-unit-tests' x86/run) puts
them, and gives them what they cannot do themselves (DESIGN.md rule 1):
interrupt lines on the in-kernel irqchip, the process's exit, and the page
flush (``mprotect`` of the host mapping away and back, as QEMU does, which
makes KVM drop its mapping of the page through the MMU notifier).
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from kvmlite.devices.legacy import isa_debug_exit as ide
from kvmlite.devices.legacy import pc_testdev as ptd
from kvmlite.memory import PAGE_SIZE, GuestMemory
from kvmlite.vmm.devices import BusKind, Placement
from kvmlite.vmm.locking import LockedDevice, RegisterDevice
from kvmlite.vmm.outcome import ExitReason

if TYPE_CHECKING:
    from kvmlite.kvm.vm import Vm
    from kvmlite.vmm.machine import Machine

log = logging.getLogger(__name__)
PROT_NONE = 0  # mman.h (the mmap module has it, its type stubs do not)


class KvmRawIrqLine:
    """KVM_IRQ_LINE on every call: pc-testdev re-asserts lines on purpose."""

    def __init__(self, vm: Vm, gsi: int) -> None:
        self._vm = vm
        self.gsi = gsi

    def set_level(self, level: bool) -> None:
        self._vm.irq_line(self.gsi, 1 if level else 0)


def page_flusher(memory: GuestMemory) -> Callable[[int], None]:
    """A ``flush_page(gpa)`` that remaps one page of guest RAM in place (ignores non-RAM)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    def flush(gpa: int) -> None:
        if not memory.contains(gpa, PAGE_SIZE):
            log.debug("pc-testdev: flush of %#x, which is not RAM, ignored", gpa)
            return
        region = memory.region_of(gpa, PAGE_SIZE)
        host = region.host_address() + (gpa - region.gpa)
        for prot in (PROT_NONE, mmap.PROT_READ | mmap.PROT_WRITE):
            if libc.mprotect(host, PAGE_SIZE, prot) != 0:
                log.warning("pc-testdev: mprotect failed: %s", os.strerror(ctypes.get_errno()))
                return

    return flush


def add_test_devices(machine: Machine) -> ptd.PcTestdev:
    """isa-debug-exit at 0xF4 and pc-testdev at its QEMU addresses."""
    pio, mmio = machine.pio_bus, machine.mmio_bus
    exit_dev = ide.IsaDebugExit(lambda status: machine.request_exit(ExitReason.DEBUG_EXIT, status))
    pio.insert(exit_dev, ide.ISA_DEBUG_EXIT_PORT, ide.ISA_DEBUG_EXIT_SIZE)
    machine.devices.add(
        exit_dev.name,
        exit_dev,
        placements=(Placement(BusKind.PIO, ide.ISA_DEBUG_EXIT_PORT, ide.ISA_DEBUG_EXIT_SIZE),),
    )
    lines = [KvmRawIrqLine(machine.vm, n) for n in range(ptd.PC_TESTDEV_IRQ_LINES)]
    dev = ptd.PcTestdev(lines, page_flusher(machine.memory))
    lock = threading.Lock()
    size = ptd.PC_TESTDEV_REG_SIZE
    regions: list[tuple[BusKind, RegisterDevice, int, int]] = [
        (BusKind.PIO, dev.ioport, ptd.PC_TESTDEV_IOPORT, size),
        (BusKind.PIO, dev.flush, ptd.PC_TESTDEV_FLUSH, size),
        (BusKind.PIO, dev.ioport_byte, ptd.PC_TESTDEV_IOPORT_BYTE, size),
        (BusKind.PIO, dev.irq, ptd.PC_TESTDEV_IRQ_BASE, ptd.PC_TESTDEV_IRQ_LINES),
        (BusKind.MMIO, dev.iomem_region, ptd.PC_TESTDEV_IOMEM_BASE, ptd.PC_TESTDEV_IOMEM_SIZE),
    ]
    for kind, region, base, length in regions:
        (pio if kind is BusKind.PIO else mmio).insert(LockedDevice(region, lock), base, length)
    placements = tuple(Placement(kind, base, length) for kind, _, base, length in regions)
    machine.devices.add(dev.name, dev, placements=placements, lock=lock)
    return dev

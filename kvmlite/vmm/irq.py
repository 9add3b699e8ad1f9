"""Interrupt objects backed by KVM, handed to device models.

Devices only see ``IrqLine.set_level`` / ``Interrupt.trigger``
(kvmlite/devices/irq.py); these classes turn them into KVM_IRQ_LINE calls on
the in-kernel PIC/IOAPIC, or into a write to an irqfd bound to a GSI.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvmlite.kvm.vm import Vm


class KvmIrqLine:
    """An ISA or PCI INTx line on the in-kernel irqchip (KVM_IRQ_LINE)."""

    def __init__(self, vm: Vm, gsi: int) -> None:
        self.vm = vm
        self.gsi = gsi
        self.level = False
        self._lock = threading.Lock()

    def set_level(self, level: bool) -> None:
        # Only tell KVM about changes: a level that does not move costs an
        # ioctl for nothing, and devices re-evaluate their line often.
        with self._lock:
            if level == self.level:
                return
            self.level = level
            self.vm.irq_line(self.gsi, 1 if level else 0)

    def trigger(self) -> None:
        with self._lock:
            self.vm.irq_line(self.gsi, 1)
            self.vm.irq_line(self.gsi, 0)
            self.level = False


class IrqfdInterrupt:
    """An edge interrupt raised by writing an eventfd that KVM injects (irqfd)."""

    def __init__(self, vm: Vm, gsi: int) -> None:
        self.gsi = gsi
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        vm.irqfd(self.fd, gsi)
        self._vm = vm

    def trigger(self) -> None:
        os.eventfd_write(self.fd, 1)

    def close(self) -> None:
        self._vm.irqfd(self.fd, self.gsi, deassign=True)
        os.close(self.fd)

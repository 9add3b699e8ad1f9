"""The GSI routing table: legacy IRQs to the PIC and IOAPIC, MSIs to the LAPICs.

KVM's default routing sends GSI n to IOAPIC pin n, so the PIT (which KVM
raises on GSI 0) would land on IOAPIC pin 0. A PC wires ISA IRQ0 to IOAPIC
pin 2, and that is what kvmlite's MADT (interrupt source override) and MP
table tell the guest, so the table is replaced at build time, like QEMU's
``kvm_pc_setup_irq_routing``: GSI 0 -> PIC pin 0 + IOAPIC pin 2; GSI 1..15
-> PIC (master 0-7, slave 8-15; 2 is the cascade) + IOAPIC pin n; GSI 16..23
-> IOAPIC pin n (PCI INTx). GSIs from 24 up are MSI routes that the VMM
allocates for MSI-X vectors; KVM_SET_GSI_ROUTING replaces the whole table,
so every change re-sends it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvmlite.kvm.structs import KvmIrqRoutingEntry
    from kvmlite.kvm.vm import Vm

from kvmlite.kvm.structs_x86 import (
    KVM_IRQCHIP_IOAPIC as IRQCHIP_IOAPIC,
)
from kvmlite.kvm.structs_x86 import (
    KVM_IRQCHIP_PIC_MASTER as IRQCHIP_PIC_MASTER,
)
from kvmlite.kvm.structs_x86 import (
    KVM_IRQCHIP_PIC_SLAVE as IRQCHIP_PIC_SLAVE,
)

IOAPIC_PINS = 24
FIRST_MSI_GSI = IOAPIC_PINS


def legacy_routes() -> list[tuple[int, int, int]]:
    """(gsi, irqchip, pin) for a PC's ISA and PCI INTx interrupts."""
    routes = []
    for irq in range(16):
        if irq == 2:
            continue  # the cascade input; nothing raises GSI 2
        chip = IRQCHIP_PIC_MASTER if irq < 8 else IRQCHIP_PIC_SLAVE
        routes.append((irq, chip, irq % 8))
    for gsi in range(IOAPIC_PINS):
        if gsi == 2:
            continue
        routes.append((gsi, IRQCHIP_IOAPIC, 2 if gsi == 0 else gsi))
    return routes


class GsiRouter:
    """Owns KVM's GSI routing table for one VM."""

    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        self._msi: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._next = FIRST_MSI_GSI

    def _entries(self) -> list[KvmIrqRoutingEntry]:
        from kvmlite.kvm.vm import irqchip_route, msi_route

        out = [irqchip_route(g, chip, pin) for g, chip, pin in legacy_routes()]
        out += [msi_route(g, addr, data) for g, (addr, data) in sorted(self._msi.items())]
        return out

    def commit(self) -> None:
        self.vm.set_gsi_routing(self._entries())

    def allocate_msi(self, address: int = 0, data: int = 0) -> int:
        """A new GSI routed to the MSI (address, data); commits the table."""
        with self._lock:
            gsi = self._next
            self._next += 1
            self._msi[gsi] = (address, data)
            self.commit()
        return gsi

    def update_msi(self, gsi: int, address: int, data: int) -> None:
        with self._lock:
            if self._msi.get(gsi) == (address, data):
                return
            self._msi[gsi] = (address, data)
            self.commit()

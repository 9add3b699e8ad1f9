"""How a device raises an interrupt, without knowing who delivers it.

A device model is handed one of these objects and never talks to KVM itself
(DESIGN.md rule 1). Inside kvmlite the objects are backed by KVM_IRQ_LINE or
an irqfd; in a vhost-user backend by the frontend's call eventfd; in tests by
``kvmlite.testing.RecordingInterrupt``.
"""

from __future__ import annotations

from typing import Protocol


class Interrupt(Protocol):
    """An edge-style interrupt: an MSI/MSI-X message or a virtqueue call."""

    def trigger(self) -> None: ...


class IrqLine(Protocol):
    """A level-style interrupt line (ISA IRQ on the PIC/IOAPIC, PCI INTx)."""

    def set_level(self, level: bool) -> None: ...


class NoInterrupt:
    """An interrupt that goes nowhere (a device whose IRQ is not wired)."""

    def trigger(self) -> None:
        pass

    def set_level(self, level: bool) -> None:
        pass

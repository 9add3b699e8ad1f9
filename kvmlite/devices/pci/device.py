"""The base of every PCI function kvmlite emulates (PCI 3.0 §6).

Theory of operation
-------------------
A ``PciDevice`` owns a ``PciConfigSpace`` and serves its BARs. The host
bridge (``PciRoot``) routes config accesses to ``read_config`` /
``write_config``; the VMM puts one bus entry per BAR on the MMIO (or PIO)
bus, using ``bar_device(i)`` as the bus device, at ``bars()``'s address.

The guest may move BARs or switch decoding off and on. After each config
write the device compares each BAR's *decoded* address (None while decoding
is off in the command register, or while the guest is sizing the BAR with
all-ones) with the previous one and calls ``on_bar_change(device, index,
old, new)``, so the VMM can move the bus entry and any ioeventfds in it.

INTx: the root gives the device an ``IrqLine`` (``intx_line``) for its pin;
``set_intx(level)`` drives it, honouring the command register's
INTx-disable bit and mirroring the level in the status register.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from kvmlite.devices.irq import IrqLine
from kvmlite.devices.pci.config import (
    PCI_COMMAND,
    PCI_COMMAND_INTX_DISABLE,
    PCI_COMMAND_IO,
    PCI_COMMAND_MEMORY,
    PCI_STATUS,
    PCI_STATUS_INTERRUPT,
    BarKind,
    PciConfigSpace,
    PciConfigState,
)
from kvmlite.devices.pci.msix import MsixState, MsixTable

log = logging.getLogger("kvmlite.devices.pci")

BarChange = Callable[["PciDevice", int, "int | None", "int | None"], None]


@dataclass(frozen=True)
class BarInfo:
    index: int
    kind: BarKind
    size: int
    #: Decoded guest-physical (or port) address, None while not decoded.
    address: int | None


@dataclass(frozen=True)
class PciDeviceState:
    config: PciConfigState
    msix: MsixState | None
    intx_level: bool


class BarBusDevice:
    """Adapter so one BAR can be inserted on a Bus: read/write at BAR offsets."""

    def __init__(self, device: PciDevice, index: int) -> None:
        self.device = device
        self.index = index

    def read(self, offset: int, size: int) -> bytes:
        return self.device.read_bar(self.index, offset, size)

    def write(self, offset: int, data: bytes) -> None:
        self.device.write_bar(self.index, offset, data)


class PciDevice:
    """Base PCI function: config space, BARs, INTx, optional MSI-X."""

    name = "pci-device"

    def __init__(self, config: PciConfigSpace, msix: MsixTable | None = None) -> None:
        self.config = config
        self.msix = msix
        self.on_bar_change: BarChange | None = None
        self.intx_line: IrqLine | None = None
        self.intx_level = False
        self._decoded = self._decoded_addresses()

    # -- BARs -------------------------------------------------------------------------------

    def _decoded_addresses(self) -> list[int | None]:
        cmd = self.config.get(PCI_COMMAND, 2)
        out: list[int | None] = []
        for i in range(6):
            bar = self.config.bar(i)
            if bar is None:
                out.append(None)
                continue
            on = cmd & (PCI_COMMAND_MEMORY if bar.is_memory else PCI_COMMAND_IO)
            out.append(self.config.bar_address(i) if on and not self.config.bar_sizing(i) else None)
        return out

    def bars(self) -> list[BarInfo]:
        """The BARs this function has, with their decoded addresses."""
        out = []
        for i in range(6):
            bar = self.config.bar(i)
            if bar is not None:
                out.append(BarInfo(i, bar.kind, bar.size, self._decoded[i]))
        return out

    def bar_device(self, index: int) -> BarBusDevice:
        return BarBusDevice(self, index)

    def read_bar(self, index: int, offset: int, size: int) -> bytes:
        """Guest read inside BAR ``index`` (override); unclaimed space reads zeros."""
        return bytes(size)

    def write_bar(self, index: int, offset: int, data: bytes) -> None:
        """Guest write inside BAR ``index`` (override)."""

    def _check_bars(self) -> None:
        new = self._decoded_addresses()
        old, self._decoded = self._decoded, new
        if self.on_bar_change is None:
            return
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                try:
                    self.on_bar_change(self, i, a, b)
                except Exception:
                    # A guest can program a BAR over another device's; the VMM
                    # refusing that mapping must not kill the vCPU thread.
                    log.exception("%s: BAR %d move %s -> %s failed", self.name, i, a, b)

    def place_bar(self, index: int, address: int) -> None:
        """Host-side BAR assignment (PciRoot.allocate_bars)."""
        self.config.set_bar_address(index, address)
        self._check_bars()

    def enable_decoding(self) -> None:
        """Turn on memory and I/O decoding, as firmware does after placing BARs."""
        cmd = self.config.get(PCI_COMMAND, 2)
        self.config.set(PCI_COMMAND, 2, cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_IO)
        self._check_bars()

    # -- config access ----------------------------------------------------------------------

    def read_config(self, offset: int, size: int) -> int:
        return self.config.read(offset, size)

    def write_config(self, offset: int, data: bytes) -> None:
        self.config.write(offset, data)
        if self.msix is not None:
            self.msix.sync_from_config(self.config)
        self.config_written(offset, data)
        if offset < 0x28 and offset + len(data) > PCI_COMMAND:
            self._check_bars()
            if offset <= PCI_COMMAND + 1 and offset + len(data) > PCI_COMMAND:
                self._apply_intx()

    def config_written(self, offset: int, data: bytes) -> None:
        """Subclass hook after a guest config write."""

    # -- INTx ---------------------------------------------------------------------------------

    def set_intx(self, level: bool) -> None:
        """Assert or deassert this function's INTx pin."""
        self.intx_level = level
        self._apply_intx()

    def _apply_intx(self) -> None:
        status = self.config.get(PCI_STATUS, 2)
        if self.intx_level:
            status |= PCI_STATUS_INTERRUPT
        else:
            status &= ~PCI_STATUS_INTERRUPT
        self.config.set(PCI_STATUS, 2, status)
        disabled = self.config.get(PCI_COMMAND, 2) & PCI_COMMAND_INTX_DISABLE
        if self.intx_line is not None:
            self.intx_line.set_level(self.intx_level and not disabled)

    # -- state ---------------------------------------------------------------------------------

    def save_pci(self) -> PciDeviceState:
        return PciDeviceState(
            self.config.save(), None if self.msix is None else self.msix.save(), self.intx_level
        )

    def restore_pci(self, state: PciDeviceState) -> None:
        self.config.load_state(state.config)
        if self.msix is not None and state.msix is not None:
            self.msix.load_state(state.msix)
            self.msix.sync_to_config(self.config)
        self._check_bars()
        self.set_intx(state.intx_level)

"""Wiring virtio devices into the machine: transports, fast paths, the I/O loop.

Theory of operation
-------------------
A device model (``kvmlite.devices.virtio``) sits behind a transport:

* **virtio-pci**: one 64-bit memory BAR. Its notify registers get one
  ioeventfd per queue (KVM signals the eventfd; the vCPU never exits to
  Python for a notify), watched by the I/O loop, which calls
  ``transport.notify(queue)``. Each MSI-X vector gets a GSI of its own
  routed to the vector's (address, data) and an irqfd, so the device's
  ``trigger()`` is a write to an eventfd that KVM turns into an interrupt.
  When the guest moves the BAR, the bus entry and the ioeventfds move too.
* **virtio-mmio**: one 4 KiB region announced on the kernel command line
  (``virtio_mmio.device=4K@BASE:IRQ``), one legacy IRQ line; the
  QueueNotify register gets an ioeventfd with a datamatch per queue index.

Every device of this module, its transport and the PCI root are touched
under one lock (``machine.dev_lock``, level 1 of kvmlite/vmm/locking.py):
from vCPU threads for register accesses, from the I/O loop for
notifications and I/O completions. ``add`` hands that lock to the device
and records it in the machine's device manager.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from kvmlite.config import Transport
from kvmlite.vmm.devices import BusKind, DeviceEntry, Placement
from kvmlite.vmm.irq import IrqfdInterrupt, KvmIrqLine
from kvmlite.vmm.locking import LockedDevice


class Notifiable(Protocol):
    """A transport a queue kick goes to (virtio-pci or virtio-mmio)."""

    def notify(self, queue: int) -> None: ...


if TYPE_CHECKING:
    from kvmlite.devices.pci.device import PciDevice
    from kvmlite.devices.pci.root import PciRoot
    from kvmlite.devices.virtio.device import VirtioDevice
    from kvmlite.devices.virtio.mmio import VirtioMmioDevice
    from kvmlite.devices.virtio.pci import VirtioPciDevice
    from kvmlite.vmm.gsi import GsiRouter
    from kvmlite.vmm.machine import Machine

log = logging.getLogger(__name__)

#: virtio-mmio devices live at the top of the 32-bit hole, below the IOAPIC,
#: one 4 KiB page each, with ISA IRQs nothing else uses.
MMIO_BASE = 0xFEB00000
MMIO_IRQS = (5, 6, 7, 10, 11, 14, 15)
#: Length of a virtio-pci notify write (virtio 1.2 §4.1.4.4: a 16-bit queue index).
NOTIFY_LEN = 2


class VirtioWiring:
    """Adds virtio devices to a machine being built (see kvmlite/vmm/builder.py)."""

    def __init__(self, machine: Machine, router: GsiRouter, pci: PciRoot) -> None:
        self.machine = machine
        self.router = router
        self.pci = pci
        self.lock = machine.dev_lock
        self.transport = machine.config.machine.virtio_transport
        self.pci_devices: list[VirtioPciDevice] = []
        self.mmio_count = 0
        self.cmdline: list[str] = []
        self._notify_fds: dict[tuple[int, int], tuple[int, int]] = {}  # (id, queue) -> fd, addr

    def close(self) -> None:
        """Close the notify eventfds of the virtio-pci devices (machine teardown)."""
        for fd, _addr in self._notify_fds.values():
            self.machine.loop.remove_reader(fd)
            os.close(fd)
        self._notify_fds.clear()

    def add(self, id: str, device: VirtioDevice) -> DeviceEntry[VirtioDevice]:
        """Put ``device`` on the transport the user chose; record it as ``id``."""
        device.use_lock(self.lock)
        transport: VirtioPciDevice | VirtioMmioDevice
        if self.transport is Transport.PCI:
            transport, placement = self.add_pci(device)
        else:
            transport, placement = self.add_mmio(device)
        return self.machine.devices.add(
            id, device, transport=transport, placements=(placement,), lock=self.lock
        )

    def locked(self, fn: Callable[[], object]) -> Callable[[], None]:
        def call() -> None:
            with self.lock:
                fn()

        return call

    # -- virtio-pci -------------------------------------------------------------

    def add_pci(self, device: VirtioDevice) -> tuple[VirtioPciDevice, Placement]:
        """Put ``device`` on PCI bus 0 behind a virtio-pci transport."""
        from kvmlite.devices.virtio.pci import VirtioPciDevice

        gsis: dict[int, int] = {}

        def on_vector_change(vector: int, address: int, data: int, masked: bool) -> None:
            if vector in gsis:
                self.router.update_msi(gsis[vector], address, data)

        vm = self.machine.vm
        transport = VirtioPciDevice(
            device,
            self.machine.memory,
            signal_msi=vm.signal_msi,
            on_vector_change=on_vector_change,
        )
        for vector in range(transport.msix.num_vectors):
            gsis[vector] = self.router.allocate_msi()
            irqfd = IrqfdInterrupt(vm, gsis[vector])
            self.machine.closers.append(irqfd.close)
            transport.msix.set_vector_interrupt(vector, irqfd)
        slot = self.pci.add_device(transport)
        # Every decode change maps or unmaps the BAR, including the first
        # placement by PciRoot.allocate_bars at build time.
        transport.on_bar_change = self._bar_moved
        self.pci_devices.append(transport)
        return transport, Placement(BusKind.PCI, slot)

    def _map_bar(self, transport: VirtioPciDevice, index: int, address: int) -> None:

        size = next(b.size for b in transport.bars() if b.index == index)
        self.machine.mmio_bus.insert(
            LockedDevice(transport.bar_device(index), self.lock), address, size
        )
        if index != 0:
            return
        for offset, queue in transport.notify_addresses():
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.machine.vm.ioeventfd(fd, address + offset, NOTIFY_LEN)
            self._notify_fds[(id(transport), queue)] = (fd, address + offset)
            self.machine.loop.add_reader(fd, self._notifier(fd, transport, queue))

    def _unmap_bar(self, transport: VirtioPciDevice, index: int, address: int) -> None:
        self.machine.mmio_bus.remove(address)
        if index != 0:
            return
        for _offset, queue in transport.notify_addresses():
            fd, addr = self._notify_fds.pop((id(transport), queue))
            self.machine.loop.remove_reader(fd)
            self.machine.vm.ioeventfd(fd, addr, NOTIFY_LEN, deassign=True)
            os.close(fd)

    def _bar_moved(
        self, transport: PciDevice, index: int, old: int | None, new: int | None
    ) -> None:
        # Called with the device lock held, on a vCPU thread (a config write).
        from kvmlite.devices.virtio.pci import VirtioPciDevice  # noqa: PLC0415

        assert isinstance(transport, VirtioPciDevice)
        if old is not None:
            self._unmap_bar(transport, index, old)
        if new is not None:
            self._map_bar(transport, index, new)

    def _notifier(self, fd: int, transport: Notifiable, queue: int) -> Callable[[], None]:
        def on_notify() -> None:
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                return
            with self.lock:
                transport.notify(queue)

        return on_notify

    # -- virtio-mmio ------------------------------------------------------------------

    def add_mmio(self, device: VirtioDevice) -> tuple[VirtioMmioDevice, Placement]:
        """Put ``device`` behind a virtio-mmio transport; announces it on the cmdline."""
        from kvmlite.devices.virtio.mmio import (
            MMIO_SIZE,
            VIRTIO_MMIO_QUEUE_NOTIFY,
            VirtioMmioDevice,
            cmdline_fragment,
        )
        from kvmlite.errors import ConfigError

        if self.mmio_count >= len(MMIO_IRQS):
            raise ConfigError(f"at most {len(MMIO_IRQS)} virtio-mmio devices")
        base = MMIO_BASE + self.mmio_count * MMIO_SIZE
        irq = MMIO_IRQS[self.mmio_count]
        self.mmio_count += 1
        transport = VirtioMmioDevice(device, self.machine.memory, KvmIrqLine(self.machine.vm, irq))
        self.machine.mmio_bus.insert(LockedDevice(transport, self.lock), base, MMIO_SIZE)
        for queue in range(device.num_queues):
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.machine.vm.ioeventfd(fd, base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, datamatch=queue)
            self.machine.loop.add_reader(fd, self._notifier(fd, transport, queue))
            self.machine.closers.append(functools.partial(os.close, fd))
        self.cmdline.append(cmdline_fragment(base, MMIO_SIZE, irq))
        return transport, Placement(BusKind.MMIO, base, MMIO_SIZE, irq)

    # -- I/O loop hooks -------------------------------------------------------------

    def watch(self, fd: int, callback: Callable[[], object]) -> None:
        """Run ``callback`` under the device lock whenever ``fd`` is readable."""
        self.machine.loop.add_reader(fd, self.locked(callback))

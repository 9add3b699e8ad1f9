"""What every virtio transport does the same way (virtio 1.2 §2.1, §2.2, §3.1).

``TransportCore`` holds the driver-visible state both the PCI and the MMIO
transports expose through different register layouts: the device status
byte and its state machine, the 64 feature bits read and written 32 at a
time through select registers, the queue selector, and the ``VirtQueue``
objects. The register decoders in ``pci.py`` and ``mmio.py`` only translate
offsets into calls on this object.

Status machine (§3.1.1): ACKNOWLEDGE -> DRIVER -> FEATURES_OK (refused,
i.e. not latched, if the device rejects the acked features) -> DRIVER_OK,
which activates the device with every queue and one interrupt per queue.
Writing 0 resets. A device error sets DEVICE_NEEDS_RESET and raises the
config-change interrupt (§2.1.2); queues whose rings lie outside guest RAM
at DRIVER_OK are such an error too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from kvmlite.devices.irq import Interrupt
from kvmlite.devices.virtio.device import VirtioDevice
from kvmlite.devices.virtio.queue import VirtQueue, VirtQueueState
from kvmlite.devices.virtio.spec import (
    VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET,
)
from kvmlite.errors import StateError
from kvmlite.memory import GuestMemory

log = logging.getLogger("kvmlite.devices.virtio")


@dataclass(frozen=True)
class TransportState:
    status: int
    device_feature_select: int
    driver_feature_select: int
    driver_features: int
    queue_select: int
    queues: tuple[VirtQueueState, ...]


class TransportCore:
    """Feature negotiation, status and queue registers shared by all transports."""

    def __init__(
        self,
        device: VirtioDevice,
        memory: GuestMemory,
        queue_interrupts: Sequence[Interrupt],
        config_interrupt: Interrupt,
    ) -> None:
        self.device = device
        self.memory = memory
        self.queues = [VirtQueue(size) for size in device.queue_max_sizes]
        self.queue_interrupts = list(queue_interrupts)
        self.config_interrupt = config_interrupt
        device.needs_reset_handler = self.set_needs_reset
        self.status = 0
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.driver_features = 0
        self.queue_select = 0

    # -- features ------------------------------------------------------------------------

    def device_features_word(self) -> int:
        sel = self.device_feature_select
        return (self.device.avail_features >> (32 * sel)) & 0xFFFFFFFF if sel < 2 else 0

    def write_driver_features_word(self, value: int) -> None:
        sel = self.driver_feature_select
        if sel >= 2 or self.status & VIRTIO_CONFIG_S_FEATURES_OK:
            return  # features are frozen once FEATURES_OK is set (§3.1.1)
        mask = 0xFFFFFFFF << (32 * sel)
        self.driver_features = (self.driver_features & ~mask) | ((value & 0xFFFFFFFF) << (32 * sel))

    def driver_features_word(self) -> int:
        sel = self.driver_feature_select
        return (self.driver_features >> (32 * sel)) & 0xFFFFFFFF if sel < 2 else 0

    # -- queues ----------------------------------------------------------------------------

    def selected_queue(self) -> VirtQueue | None:
        if 0 <= self.queue_select < len(self.queues):
            return self.queues[self.queue_select]
        return None

    def queue_config_allowed(self) -> bool:
        """Queue registers are writable before DRIVER_OK only (§4.1.4.3.2, §4.2.2.2)."""
        return not self.status & VIRTIO_CONFIG_S_DRIVER_OK

    # -- status ------------------------------------------------------------------------------

    def write_status(self, value: int) -> None:
        value &= 0xFF
        if value == 0:
            self.reset()
            return
        old = self.status
        if value & VIRTIO_CONFIG_S_FEATURES_OK and not old & VIRTIO_CONFIG_S_FEATURES_OK:
            self.device.ack_features(self.driver_features)
            if self.driver_features & ~self.device.avail_features or not self.device.features_ok():
                value &= ~VIRTIO_CONFIG_S_FEATURES_OK
        # NEEDS_RESET is the device's to set; the driver cannot clear it except by reset.
        self.status = (value & ~VIRTIO_CONFIG_S_NEEDS_RESET) | (old & VIRTIO_CONFIG_S_NEEDS_RESET)
        if (
            value & VIRTIO_CONFIG_S_DRIVER_OK
            and not old & VIRTIO_CONFIG_S_DRIVER_OK
            and not value & VIRTIO_CONFIG_S_FAILED
        ):
            if not self.status & VIRTIO_CONFIG_S_FEATURES_OK:
                self.set_needs_reset("DRIVER_OK without FEATURES_OK")
                return
            self.activate()

    def activate(self) -> None:
        for i, q in enumerate(self.queues):
            if q.ready and not q.is_valid(self.memory):
                self.set_needs_reset(f"queue {i} has a bad size or rings outside guest RAM")
                return
        self.device.activate(self.memory, self.queues, self.queue_interrupts, self.config_interrupt)

    def reset(self) -> None:
        self.device.reset()
        for q in self.queues:
            q.reset()
        self.status = 0
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.driver_features = 0
        self.queue_select = 0

    def set_needs_reset(self, reason: str | None = None) -> None:
        """The device (or the transport) hit a guest error: DEVICE_NEEDS_RESET (§2.1.2)."""
        if reason is not None:
            log.error("%s: %s; device needs reset", self.device.name, reason)
        if self.status & VIRTIO_CONFIG_S_NEEDS_RESET:
            return
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK:
            self.config_interrupt.trigger()

    def notify(self, index: int) -> None:
        """A queue notification from the driver (register write, ioeventfd, vhost kick)."""
        self.device.process_queue(index)

    # -- state --------------------------------------------------------------------------------

    def save(self) -> TransportState:
        return TransportState(
            status=self.status,
            device_feature_select=self.device_feature_select,
            driver_feature_select=self.driver_feature_select,
            driver_features=self.driver_features,
            queue_select=self.queue_select,
            queues=tuple(q.save() for q in self.queues),
        )

    def load_state(self, state: TransportState) -> None:
        """Restore registers and queues; re-activate the (already restored) device."""
        if len(state.queues) != len(self.queues):
            raise StateError(
                f"{self.device.name}: {len(state.queues)} queues in the snapshot, expected"
                f" {len(self.queues)}: restore with the same device options"
            )
        for q, qs in zip(self.queues, state.queues, strict=True):
            q.load_state(qs)
        self.status = state.status
        self.device_feature_select = state.device_feature_select
        self.driver_feature_select = state.driver_feature_select
        self.driver_features = state.driver_features
        self.queue_select = state.queue_select
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK:
            self.device.activate(
                self.memory, self.queues, self.queue_interrupts, self.config_interrupt
            )

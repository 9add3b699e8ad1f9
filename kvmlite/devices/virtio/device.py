"""The transport-independent part of a virtio device (virtio 1.2 §2, §3).

Theory of operation
-------------------
A ``VirtioDevice`` knows its device type, the features it offers, how many
queues it has and how big they may be, and its device-specific config space.
A transport (``VirtioPciDevice``, ``VirtioMmioDevice``, a vhost-user backend)
owns the ``VirtQueue`` objects and the feature/status registers, and calls:

* ``ack_features(value)`` while the driver negotiates (§3.1.1 step 5),
* ``activate(memory, queues, queue_interrupts, config_interrupt)`` once the
  driver sets DRIVER_OK (it hands in one ``Interrupt`` per queue: an MSI-X
  vector, an ISR-setting shared line, or a vhost-user call eventfd),
* ``process_queue(index)`` whenever queue ``index`` is kicked (ioeventfd in
  the I/O loop, an MMIO/PCI notify write, a vhost-user kick),
* ``reset()`` when the driver writes 0 to device status.

``needs_reset_handler`` is set by the transport; a device error (a corrupt
ring, a malformed chain) calls it once, which sets DEVICE_NEEDS_RESET and
raises a config-change interrupt (§2.1.2), logs one line, and stops the
device processing queues until the driver resets it. Nothing a guest writes
makes ``process_queue`` raise (DESIGN.md rule 6).

All entry points take ``self.lock``: kicks arrive on the I/O loop thread,
register writes (reset, MMIO notify) on vCPU threads. A program that owns a
lock around the device and its transport already (kvmlite's VMM: see
kvmlite/vmm/locking.py) hands it in with ``use_lock`` so only one is taken.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kvmlite.devices.irq import Interrupt, NoInterrupt
from kvmlite.devices.virtio.queue import ChainError, QueueError, VirtQueue
from kvmlite.devices.virtio.spec import (
    VIRTIO_F_EVENT_IDX,
    VIRTIO_F_INDIRECT_DESC,
    VIRTIO_F_VERSION_1,
    bit,
)
from kvmlite.errors import GuestMemoryError, StateError
from kvmlite.memory import GuestMemory

log = logging.getLogger("kvmlite.devices.virtio")

#: Features every kvmlite virtio device offers.
COMMON_FEATURES = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_EVENT_IDX) | bit(VIRTIO_F_INDIRECT_DESC)


@dataclass(frozen=True)
class VirtioDeviceState:
    """The base-class part of every virtio device's state."""

    acked_features: int
    activated: bool
    broken: bool
    config_generation: int


class VirtioDevice:
    """Base class of virtio device models; subclasses override the ``handle_*`` hooks."""

    #: §5 device ID (VIRTIO_ID_*).
    device_type: int = 0

    def __init__(self, *, name: str, queue_sizes: Sequence[int], features: int = 0) -> None:
        self.name = name
        self.queue_max_sizes = tuple(queue_sizes)
        self.avail_features = features | COMMON_FEATURES
        self.acked_features = 0
        self.lock = threading.RLock()
        self.memory: GuestMemory | None = None
        self.queues: list[VirtQueue] = []
        self.queue_interrupts: list[Interrupt] = []
        self.config_interrupt: Interrupt = NoInterrupt()
        self.activated = False
        self.broken = False
        self.config_generation = 0
        self.needs_reset_handler: Callable[[], None] | None = None

    @property
    def num_queues(self) -> int:
        return len(self.queue_max_sizes)

    # -- feature negotiation ------------------------------------------------------------

    def ack_features(self, value: int) -> None:
        """The driver's accepted features; bits we did not offer are dropped."""
        self.acked_features = value & self.avail_features

    def has_feature(self, feature_bit: int) -> bool:
        return bool(self.acked_features & bit(feature_bit))

    def features_ok(self) -> bool:
        """Whether the acked set is acceptable (FEATURES_OK check, §3.1.1 step 6)."""
        return self.has_feature(VIRTIO_F_VERSION_1)

    # -- config space -------------------------------------------------------------------

    def config_bytes(self) -> bytes:
        """The device-specific config space (override)."""
        return b""

    def read_config(self, offset: int, size: int) -> bytes:
        """Read ``size`` bytes at ``offset``; outside the space reads as zeros."""
        cfg = self.config_bytes()
        data = cfg[offset : offset + size] if 0 <= offset < len(cfg) else b""
        return data + bytes(size - len(data))

    def write_config(self, offset: int, data: bytes) -> None:
        """Driver writes to config space; read-only by default (ignored)."""

    def config_changed(self) -> None:
        """Tell the driver the config space changed (bumps config_generation)."""
        self.config_generation = (self.config_generation + 1) & 0xFF
        self.config_interrupt.trigger()

    def use_lock(self, lock: threading.RLock) -> None:
        """Guard the device with ``lock`` (re-entrant) instead of its own; call before use."""
        self.lock = lock

    # -- lifecycle ----------------------------------------------------------------------

    def activate(
        self,
        memory: GuestMemory,
        queues: Sequence[VirtQueue],
        queue_interrupts: Sequence[Interrupt],
        config_interrupt: Interrupt,
    ) -> None:
        """Start the device with the driver's queues (transport calls at DRIVER_OK)."""
        if len(queues) != self.num_queues or len(queue_interrupts) != self.num_queues:
            raise ValueError(f"{self.name}: expects {self.num_queues} queues and interrupts")
        with self.lock:
            self.memory = memory
            self.queues = list(queues)
            self.queue_interrupts = list(queue_interrupts)
            self.config_interrupt = config_interrupt
            event_idx = self.has_feature(VIRTIO_F_EVENT_IDX)
            for q in self.queues:
                q.set_event_idx(event_idx)
            self.activated = True
            self.on_activate()

    def reset(self) -> None:
        """Device reset (§2.4): forget the driver's queues and features."""
        with self.lock:
            self.on_reset()
            self.activated = False
            self.broken = False
            self.acked_features = 0
            self.memory = None
            self.queues = []
            self.queue_interrupts = []
            self.config_interrupt = NoInterrupt()

    def on_activate(self) -> None:
        """Subclass hook, called with the lock held after activation."""

    def on_reset(self) -> None:
        """Subclass hook, called with the lock held before reset."""

    # -- queue processing ---------------------------------------------------------------

    def process_queue(self, index: int) -> None:
        """Handle a kick of queue ``index``; never raises for guest errors."""
        with self.lock:
            if not self.activated or self.broken or not 0 <= index < len(self.queues):
                return
            if not self.queues[index].ready:
                return
            try:
                self.handle_queue(index)
            except ChainError as e:
                self._return_bad_chain(index, e)
                self.device_error(str(e))
            except (QueueError, GuestMemoryError) as e:
                self.device_error(f"queue {index}: {e}")
            except Exception as e:  # a bug of ours: keep the VMM alive, stop the device
                log.exception("%s: internal error on queue %d", self.name, index)
                self.device_error(f"internal error on queue {index}: {e!r}")

    def handle_queue(self, index: int) -> None:
        """Subclass hook: pop chains of queue ``index`` and serve them."""

    def _return_bad_chain(self, index: int, e: ChainError) -> None:
        # Give the head back (length 0) so the driver is not left waiting on it.
        q = self.queues[index]
        assert self.memory is not None
        if e.head < q.size:
            try:
                q.add_used(self.memory, e.head, 0)
                self.signal_queue(index)
            except QueueError:
                pass

    def signal_queue(self, index: int) -> None:
        """Interrupt the driver for queue ``index`` if it asked for one."""
        assert self.memory is not None
        if self.queues[index].needs_notification(self.memory):
            self.queue_interrupts[index].trigger()

    def device_error(self, reason: str) -> None:
        """The guest broke the device: log once, ask for a reset, stop processing."""
        if self.broken:
            return
        self.broken = True
        log.error("%s: %s; device needs reset", self.name, reason)
        if self.needs_reset_handler is not None:
            self.needs_reset_handler()

    # -- state --------------------------------------------------------------------------

    def save_base(self) -> VirtioDeviceState:
        return VirtioDeviceState(
            acked_features=self.acked_features,
            activated=self.activated,
            broken=self.broken,
            config_generation=self.config_generation,
        )

    def restore_base(self, state: VirtioDeviceState) -> None:
        """Restore the base part; the transport re-activates with live objects after."""
        if state.acked_features & ~self.avail_features:
            raise StateError(
                f"{self.name}: snapshot has features {state.acked_features:#x} this device"
                " does not offer; restore with the same device options"
            )
        self.acked_features = state.acked_features
        self.broken = state.broken
        self.config_generation = state.config_generation
        # ``activated`` is re-established by the transport calling activate().
        self.activated = False

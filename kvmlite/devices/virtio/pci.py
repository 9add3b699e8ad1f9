"""The modern virtio PCI transport (virtio 1.2 §4.1, "Virtio Over PCI Bus").

Theory of operation
-------------------
``VirtioPciDevice`` is a ``PciDevice`` (vendor 0x1af4, device 0x1040 + type,
revision 1: a modern-only device) wrapping any ``VirtioDevice``. Everything
lives in one 64-bit memory BAR (BAR 0, ``BAR_SIZE`` bytes)::

    0x0000  common configuration   (VIRTIO_PCI_CAP_COMMON_CFG, §4.1.4.3)
    0x1000  ISR status             (VIRTIO_PCI_CAP_ISR_CFG, §4.1.4.5)
    0x2000  device configuration   (VIRTIO_PCI_CAP_DEVICE_CFG, §4.1.4.6)
    0x3000  notifications          (VIRTIO_PCI_CAP_NOTIFY_CFG, §4.1.4.4):
            queue i at 0x3000 + 4*i (queue_notify_off = i, multiplier 4)
    0x4000  MSI-X table
    0x5000  MSI-X PBA

plus the VIRTIO_PCI_CAP_PCI_CFG window in config space (§4.1.4.8).

The VMM wires the fast paths from three things:

* ``notify_addresses()``: (BAR-0 offset, queue index) pairs. Register an
  ioeventfd (any length, or 2 bytes) at BAR-0 address + offset and call
  ``transport.notify(queue)`` (or ``device.process_queue``) when it fires.
  ``on_bar_change`` (from ``PciDevice``) says when BAR 0 moves.
* ``msix``: attach one irqfd-backed ``Interrupt`` per vector with
  ``msix.set_vector_interrupt(v, irq)`` and keep the KVM GSI route of each
  vector in step through ``msix.on_vector_change``.
* INTx (``intx_line``, given by ``PciRoot.connect_intx``) for drivers that
  do not enable MSI-X: the ISR byte is set and the line asserted until the
  driver reads ISR.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from kvmlite.devices.pci.config import PCI_CAP_ID_VNDR, BarKind, PciConfigSpace
from kvmlite.devices.pci.device import PciDevice, PciDeviceState
from kvmlite.devices.pci.msix import MsixTable, VectorChange
from kvmlite.devices.persist import Persist
from kvmlite.devices.virtio.device import VirtioDevice
from kvmlite.devices.virtio.spec import (
    VIRTIO_ID_BLOCK,
    VIRTIO_ID_CONSOLE,
    VIRTIO_ID_NET,
    VIRTIO_ID_RNG,
    VIRTIO_ISR_CONFIG,
    VIRTIO_ISR_QUEUE,
)
from kvmlite.devices.virtio.transport import TransportCore, TransportState
from kvmlite.errors import StateError
from kvmlite.memory import GuestMemory

VIRTIO_PCI_VENDOR_ID = 0x1AF4
VIRTIO_PCI_DEVICE_ID_BASE = 0x1040
VIRTIO_PCI_SUBSYSTEM_ID = 0x1100
VIRTIO_MSI_NO_VECTOR = 0xFFFF

# §4.1.4 capability cfg_type values
VIRTIO_PCI_CAP_COMMON_CFG = 1
VIRTIO_PCI_CAP_NOTIFY_CFG = 2
VIRTIO_PCI_CAP_ISR_CFG = 3
VIRTIO_PCI_CAP_DEVICE_CFG = 4
VIRTIO_PCI_CAP_PCI_CFG = 5

# struct virtio_pci_common_cfg (§4.1.4.3)
VIRTIO_PCI_COMMON_DFSELECT = 0
VIRTIO_PCI_COMMON_DF = 4
VIRTIO_PCI_COMMON_GFSELECT = 8
VIRTIO_PCI_COMMON_GF = 12
VIRTIO_PCI_COMMON_MSIX = 16
VIRTIO_PCI_COMMON_NUMQ = 18
VIRTIO_PCI_COMMON_STATUS = 20
VIRTIO_PCI_COMMON_CFGGENERATION = 21
VIRTIO_PCI_COMMON_Q_SELECT = 22
VIRTIO_PCI_COMMON_Q_SIZE = 24
VIRTIO_PCI_COMMON_Q_MSIX = 26
VIRTIO_PCI_COMMON_Q_ENABLE = 28
VIRTIO_PCI_COMMON_Q_NOFF = 30
VIRTIO_PCI_COMMON_Q_DESCLO = 32
VIRTIO_PCI_COMMON_Q_DESCHI = 36
VIRTIO_PCI_COMMON_Q_AVAILLO = 40
VIRTIO_PCI_COMMON_Q_AVAILHI = 44
VIRTIO_PCI_COMMON_Q_USEDLO = 48
VIRTIO_PCI_COMMON_Q_USEDHI = 52
COMMON_CFG_LEN = 64  # incl. the 1.2 notif_config_data/queue_reset and admin fields

BAR_INDEX = 0
BAR_SIZE = 0x8000
COMMON_OFFSET = 0x0000
ISR_OFFSET = 0x1000
DEVICE_CFG_OFFSET = 0x2000
DEVICE_CFG_LEN = 0x1000
NOTIFY_OFFSET = 0x3000
NOTIFY_OFF_MULTIPLIER = 4
MSIX_TABLE_OFFSET = 0x4000
MSIX_PBA_OFFSET = 0x5000
REGION_LEN = 0x1000

PCI_CLASS = {
    VIRTIO_ID_NET: 0x020000,
    VIRTIO_ID_BLOCK: 0x018000,
    VIRTIO_ID_CONSOLE: 0x078000,
    VIRTIO_ID_RNG: 0x00FF00,
}


@dataclass(frozen=True)
class VirtioPciState:
    pci: PciDeviceState
    transport: TransportState
    msix_config: int
    queue_vectors: tuple[int, ...]
    isr: int


class _Signal:
    """The Interrupt handed to the device for one queue (or config changes)."""

    def __init__(self, owner: VirtioPciDevice, queue: int | None) -> None:
        self.owner = owner
        self.queue = queue

    def trigger(self) -> None:
        self.owner._signal(self.queue)


class VirtioPciDevice(PciDevice, Persist[VirtioPciState]):
    """A virtio device on the PCI bus (modern interface only)."""

    def __init__(
        self,
        device: VirtioDevice,
        memory: GuestMemory,
        *,
        msix_vectors: int | None = None,
        signal_msi: Callable[[int, int], object] | None = None,
        on_vector_change: VectorChange | None = None,
    ) -> None:
        nq = device.num_queues
        if nq * NOTIFY_OFF_MULTIPLIER > REGION_LEN:
            raise ValueError(f"{device.name}: too many queues ({nq}) for the notify region")
        vectors = nq + 1 if msix_vectors is None else msix_vectors
        cfg = PciConfigSpace(
            vendor_id=VIRTIO_PCI_VENDOR_ID,
            device_id=VIRTIO_PCI_DEVICE_ID_BASE + device.device_type,
            class_code=PCI_CLASS.get(device.device_type, 0xFF0000),
            revision=1,
            subsystem_vendor_id=VIRTIO_PCI_VENDOR_ID,
            subsystem_id=VIRTIO_PCI_SUBSYSTEM_ID,
            interrupt_pin=1,
        )
        cfg.add_bar(BAR_INDEX, BAR_SIZE, BarKind.MEM64)
        msix = MsixTable(vectors, signal_msi=signal_msi, on_vector_change=on_vector_change)
        msix.add_capability(cfg, BAR_INDEX, MSIX_TABLE_OFFSET, BAR_INDEX, MSIX_PBA_OFFSET)
        self._add_virtio_cap(cfg, VIRTIO_PCI_CAP_COMMON_CFG, COMMON_OFFSET, COMMON_CFG_LEN)
        self._add_virtio_cap(
            cfg,
            VIRTIO_PCI_CAP_NOTIFY_CFG,
            NOTIFY_OFFSET,
            nq * NOTIFY_OFF_MULTIPLIER,
            extra=struct.pack("<I", NOTIFY_OFF_MULTIPLIER),
        )
        self._add_virtio_cap(cfg, VIRTIO_PCI_CAP_ISR_CFG, ISR_OFFSET, 1)
        self._add_virtio_cap(cfg, VIRTIO_PCI_CAP_DEVICE_CFG, DEVICE_CFG_OFFSET, DEVICE_CFG_LEN)
        # The PCI config access window: bar/offset/length and the data are guest-writable.
        self.pci_cfg_cap = self._add_virtio_cap(
            cfg,
            VIRTIO_PCI_CAP_PCI_CFG,
            0,
            0,
            extra=bytes(4),
            wmask=b"\0\0\xff\0\0\0" + b"\xff" * 4 + b"\xff" * 4 + b"\xff" * 4,
        )
        super().__init__(cfg, msix)
        self.msix: MsixTable = msix
        self.name = f"virtio-pci-{device.name}"
        self.device = device
        self.isr = 0
        self._isr_lock = threading.Lock()
        self.msix_config = VIRTIO_MSI_NO_VECTOR
        self.queue_vectors = [VIRTIO_MSI_NO_VECTOR] * nq
        self.core = TransportCore(
            device, memory, [_Signal(self, i) for i in range(nq)], _Signal(self, None)
        )

    @staticmethod
    def _add_virtio_cap(
        cfg: PciConfigSpace,
        cfg_type: int,
        offset: int,
        length: int,
        extra: bytes = b"",
        wmask: bytes | None = None,
    ) -> int:
        cap_len = 16 + len(extra)
        body = struct.pack("<BBBB2xII", cap_len, cfg_type, BAR_INDEX, 0, offset, length) + extra
        if cfg_type == VIRTIO_PCI_CAP_PCI_CFG:
            body = struct.pack("<BBBB2xII", cap_len, cfg_type, 0, 0, 0, 0) + extra
        return cfg.add_capability(PCI_CAP_ID_VNDR, body, wmask)

    # -- VMM wiring --

    def notify_addresses(self) -> list[tuple[int, int]]:
        """(offset in BAR 0, queue index) of each queue's notify register."""
        return [
            (NOTIFY_OFFSET + NOTIFY_OFF_MULTIPLIER * i, i) for i in range(self.device.num_queues)
        ]

    def notify(self, queue: int) -> None:
        """A queue kick (ioeventfd fired, or a notify register write)."""
        self.core.notify(queue)

    # -- interrupts --

    def _signal(self, queue: int | None) -> None:
        vector = self.msix_config if queue is None else self.queue_vectors[queue]
        if self.msix.enabled:
            # With MSI-X on, a queue without a vector gets no interrupt (§4.1.5.1.2.1).
            if vector != VIRTIO_MSI_NO_VECTOR:
                self.msix.notify(vector)
            return
        with self._isr_lock:
            self.isr |= VIRTIO_ISR_CONFIG if queue is None else VIRTIO_ISR_QUEUE
            self.set_intx(True)

    def _read_isr(self) -> int:
        with self._isr_lock:
            value, self.isr = self.isr, 0
            self.set_intx(False)
        return value

    # -- BAR 0 --

    def read_bar(self, index: int, offset: int, size: int) -> bytes:
        if index != BAR_INDEX or size not in (1, 2, 4, 8):
            return bytes(size)
        region, off = offset & ~0xFFF, offset & 0xFFF
        if region == COMMON_OFFSET:
            return self._read_common(off, size).to_bytes(size, "little")
        if region == ISR_OFFSET:
            return (self._read_isr() if off == 0 else 0).to_bytes(size, "little")
        if region == DEVICE_CFG_OFFSET:
            return self.device.read_config(off, size)
        if region == MSIX_TABLE_OFFSET:
            return self.msix.read_table(off, size)
        if region == MSIX_PBA_OFFSET:
            return self.msix.read_pba(off, size)
        return bytes(size)

    def write_bar(self, index: int, offset: int, data: bytes) -> None:
        if index != BAR_INDEX or len(data) not in (1, 2, 4, 8):
            return
        region, off = offset & ~0xFFF, offset & 0xFFF
        if region == COMMON_OFFSET:
            self._write_common(off, len(data), int.from_bytes(data, "little"))
        elif region == DEVICE_CFG_OFFSET:
            self.device.write_config(off, data)
        elif region == NOTIFY_OFFSET:
            queue = off // NOTIFY_OFF_MULTIPLIER
            if queue < self.device.num_queues:
                self.notify(queue)
        elif region == MSIX_TABLE_OFFSET:
            self.msix.write_table(off, data)

    def _read_common(self, off: int, size: int) -> int:
        core = self.core
        q = core.selected_queue()
        qsel = core.queue_select
        fields = {
            VIRTIO_PCI_COMMON_DFSELECT: (4, core.device_feature_select),
            VIRTIO_PCI_COMMON_DF: (4, core.device_features_word()),
            VIRTIO_PCI_COMMON_GFSELECT: (4, core.driver_feature_select),
            VIRTIO_PCI_COMMON_GF: (4, core.driver_features_word()),
            VIRTIO_PCI_COMMON_MSIX: (2, self.msix_config),
            VIRTIO_PCI_COMMON_NUMQ: (2, self.device.num_queues),
            VIRTIO_PCI_COMMON_STATUS: (1, core.status),
            VIRTIO_PCI_COMMON_CFGGENERATION: (1, self.device.config_generation),
            VIRTIO_PCI_COMMON_Q_SELECT: (2, qsel),
            VIRTIO_PCI_COMMON_Q_SIZE: (2, q.size if q else 0),
            VIRTIO_PCI_COMMON_Q_MSIX: (2, self.queue_vectors[qsel] if q else VIRTIO_MSI_NO_VECTOR),
            VIRTIO_PCI_COMMON_Q_ENABLE: (2, int(q.ready) if q else 0),
            VIRTIO_PCI_COMMON_Q_NOFF: (2, qsel if q else 0),
            VIRTIO_PCI_COMMON_Q_DESCLO: (8, q.desc_table if q else 0),
            VIRTIO_PCI_COMMON_Q_AVAILLO: (8, q.avail_ring if q else 0),
            VIRTIO_PCI_COMMON_Q_USEDLO: (8, q.used_ring if q else 0),
        }
        # Serve any naturally sized access from the little-endian image of the struct.
        image = bytearray(COMMON_CFG_LEN)
        for foff, (flen, value) in fields.items():
            image[foff : foff + flen] = value.to_bytes(flen, "little")
        return int.from_bytes(image[off : off + size].ljust(size, b"\0"), "little")

    def _write_common(self, off: int, size: int, value: int) -> None:
        core = self.core
        q = core.selected_queue()
        if off == VIRTIO_PCI_COMMON_DFSELECT and size == 4:
            core.device_feature_select = value
        elif off == VIRTIO_PCI_COMMON_GFSELECT and size == 4:
            core.driver_feature_select = value
        elif off == VIRTIO_PCI_COMMON_GF and size == 4:
            core.write_driver_features_word(value)
        elif off == VIRTIO_PCI_COMMON_MSIX and size == 2:
            self.msix_config = self._vector(value)
        elif off == VIRTIO_PCI_COMMON_STATUS and size == 1:
            core.write_status(value)
            if core.status == 0:
                self._transport_reset()
        elif off == VIRTIO_PCI_COMMON_Q_SELECT and size == 2:
            core.queue_select = value
        elif q is None or not core.queue_config_allowed():
            return
        elif off == VIRTIO_PCI_COMMON_Q_SIZE and size == 2:
            q.set_size(value)
        elif off == VIRTIO_PCI_COMMON_Q_MSIX and size == 2:
            self.queue_vectors[core.queue_select] = self._vector(value)
        elif off == VIRTIO_PCI_COMMON_Q_ENABLE and size == 2:
            if value == 1:  # writing 0 is not allowed (§4.1.4.3.2); ring reset not offered
                q.set_ready(True)
        elif off in (VIRTIO_PCI_COMMON_Q_DESCLO, VIRTIO_PCI_COMMON_Q_DESCHI):
            self._set_addr(q.set_desc_table_address, off - VIRTIO_PCI_COMMON_Q_DESCLO, size, value)
        elif off in (VIRTIO_PCI_COMMON_Q_AVAILLO, VIRTIO_PCI_COMMON_Q_AVAILHI):
            self._set_addr(q.set_avail_ring_address, off - VIRTIO_PCI_COMMON_Q_AVAILLO, size, value)
        elif off in (VIRTIO_PCI_COMMON_Q_USEDLO, VIRTIO_PCI_COMMON_Q_USEDHI):
            self._set_addr(q.set_used_ring_address, off - VIRTIO_PCI_COMMON_Q_USEDLO, size, value)

    @staticmethod
    def _set_addr(setter: Callable[..., None], half: int, size: int, value: int) -> None:
        if size == 8 and half == 0:
            setter(value & 0xFFFFFFFF, value >> 32)
        elif size == 4 and half == 0:
            setter(value)
        elif size == 4:
            setter(None, value)

    def _vector(self, value: int) -> int:
        # A vector we cannot map reads back as NO_VECTOR (§4.1.5.1.2).
        return value if value < self.msix.num_vectors else VIRTIO_MSI_NO_VECTOR

    def _transport_reset(self) -> None:
        self.msix_config = VIRTIO_MSI_NO_VECTOR
        self.queue_vectors = [VIRTIO_MSI_NO_VECTOR] * self.device.num_queues
        with self._isr_lock:
            self.isr = 0
            self.set_intx(False)

    # -- VIRTIO_PCI_CAP_PCI_CFG window (§4.1.4.8) --

    def _pci_cfg_target(self) -> tuple[int, int, int]:
        c = self.pci_cfg_cap
        bar = self.config.get(c + 4, 1)
        offset = self.config.get(c + 8, 4)
        length = self.config.get(c + 12, 4)
        return bar, offset, length

    def read_config(self, offset: int, size: int) -> int:
        data_off = self.pci_cfg_cap + 16
        if offset == data_off:
            bar, boff, length = self._pci_cfg_target()
            if length in (1, 2, 4) and bar == BAR_INDEX and size >= length:
                value = self.read_bar(bar, boff, length)
                self.config.data[data_off : data_off + length] = value
        return super().read_config(offset, size)

    def config_written(self, offset: int, data: bytes) -> None:
        data_off = self.pci_cfg_cap + 16
        if offset == data_off:
            bar, boff, length = self._pci_cfg_target()
            if length in (1, 2, 4) and bar == BAR_INDEX and len(data) >= length:
                self.write_bar(bar, boff, data[:length])

    # -- state --

    def save(self) -> VirtioPciState:
        """The transport's state; save ``self.device`` separately (its State type differs)."""
        return VirtioPciState(
            pci=self.save_pci(),
            transport=self.core.save(),
            msix_config=self.msix_config,
            queue_vectors=tuple(self.queue_vectors),
            isr=self.isr,
        )

    def load_state(self, state: VirtioPciState) -> None:
        """Apply after the device's own state: re-activates the device when DRIVER_OK."""
        if len(state.queue_vectors) != self.device.num_queues:
            raise StateError(f"{self.name}: queue count differs in the snapshot")
        self.msix_config = state.msix_config
        self.queue_vectors = list(state.queue_vectors)
        self.restore_pci(state.pci)
        with self._isr_lock:
            self.isr = state.isr
        self.core.load_state(state.transport)

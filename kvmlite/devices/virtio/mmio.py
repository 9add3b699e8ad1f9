"""The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2, "MMIO Device Register Layout").

A ``VirtioMmioDevice`` is a bus device (insert on the MMIO bus at ``base``,
size ``MMIO_SIZE``) with one level-triggered IRQ line. Linux finds it from
the kernel command line: ``cmdline_fragment(base, size, irq)`` gives
``virtio_mmio.device=4K@0xd0000000:5``.

Interrupts: any queue or config interrupt sets a bit in InterruptStatus and
raises the line, lowering it first if it was already high so that each
interrupt is a new rising edge (the pin may be edge- or level-triggered); the
driver acknowledges through InterruptACK, and the line drops when no bit is
left. QueueNotify writes (or an ioeventfd at
``base + VIRTIO_MMIO_QUEUE_NOTIFY`` with datamatch on the queue index, since
all queues share the register) kick the queue.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from kvmlite.devices.irq import IrqLine
from kvmlite.devices.persist import Persist
from kvmlite.devices.virtio.device import VirtioDevice
from kvmlite.devices.virtio.spec import VIRTIO_ISR_CONFIG, VIRTIO_ISR_QUEUE
from kvmlite.devices.virtio.transport import TransportCore, TransportState
from kvmlite.memory import GuestMemory

MMIO_SIZE = 0x1000
VIRTIO_MMIO_MAGIC = 0x74726976  # "virt"
VIRTIO_MMIO_VENDOR_ID = 0x4B4C564B  # "KVLK": kvmlite's vendor id, little-endian
VIRTIO_MMIO_VERSION = 2

VIRTIO_MMIO_MAGIC_VALUE = 0x000
VIRTIO_MMIO_VERSION_REG = 0x004
VIRTIO_MMIO_DEVICE_ID = 0x008
VIRTIO_MMIO_VENDOR_ID_REG = 0x00C
VIRTIO_MMIO_DEVICE_FEATURES = 0x010
VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014
VIRTIO_MMIO_DRIVER_FEATURES = 0x020
VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024
VIRTIO_MMIO_QUEUE_SEL = 0x030
VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034
VIRTIO_MMIO_QUEUE_NUM = 0x038
VIRTIO_MMIO_QUEUE_READY = 0x044
VIRTIO_MMIO_QUEUE_NOTIFY = 0x050
VIRTIO_MMIO_INTERRUPT_STATUS = 0x060
VIRTIO_MMIO_INTERRUPT_ACK = 0x064
VIRTIO_MMIO_STATUS = 0x070
VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080
VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084
VIRTIO_MMIO_QUEUE_AVAIL_LOW = 0x090
VIRTIO_MMIO_QUEUE_AVAIL_HIGH = 0x094
VIRTIO_MMIO_QUEUE_USED_LOW = 0x0A0
VIRTIO_MMIO_QUEUE_USED_HIGH = 0x0A4
VIRTIO_MMIO_SHM_LEN_LOW = 0x0B0
VIRTIO_MMIO_SHM_LEN_HIGH = 0x0B4
VIRTIO_MMIO_SHM_BASE_LOW = 0x0B8
VIRTIO_MMIO_SHM_BASE_HIGH = 0x0BC
VIRTIO_MMIO_CONFIG_GENERATION = 0x0FC
VIRTIO_MMIO_CONFIG = 0x100


def cmdline_fragment(base: int, size: int, irq: int) -> str:
    """The kernel parameter announcing a virtio-mmio device (virtio_mmio.device=)."""
    if size % 1024 == 0:
        sz = f"{size // 1024}K"
    else:
        sz = str(size)
    return f"virtio_mmio.device={sz}@{base:#x}:{irq}"


@dataclass(frozen=True)
class VirtioMmioState:
    transport: TransportState
    interrupt_status: int


class _Signal:
    def __init__(self, owner: VirtioMmioDevice, bit: int) -> None:
        self.owner = owner
        self.bit = bit

    def trigger(self) -> None:
        self.owner._raise(self.bit)


class VirtioMmioDevice(Persist[VirtioMmioState]):
    """A virtio device behind the MMIO register layout, version 2."""

    def __init__(self, device: VirtioDevice, memory: GuestMemory, irq: IrqLine) -> None:
        self.device = device
        self.irq = irq
        self.interrupt_status = 0
        self._lock = threading.Lock()
        queue_signal = _Signal(self, VIRTIO_ISR_QUEUE)
        self.core = TransportCore(
            device,
            memory,
            [queue_signal] * device.num_queues,
            _Signal(self, VIRTIO_ISR_CONFIG),
        )

    # -- interrupt line ----------------------------------------------------------------------

    def _raise(self, bit: int) -> None:
        with self._lock:
            was_pending = self.interrupt_status
            self.interrupt_status |= bit
            if was_pending:
                # A fresh rising edge for every interrupt: on an edge-triggered
                # pin (ISA IRQs default to edge) a line that merely stays high
                # would lose an interrupt raised while the driver's handler runs.
                self.irq.set_level(False)
            self.irq.set_level(True)

    def _ack(self, bits: int) -> None:
        with self._lock:
            self.interrupt_status &= ~bits
            self.irq.set_level(bool(self.interrupt_status))

    def notify(self, queue: int) -> None:
        """A queue kick (QueueNotify write or its ioeventfd)."""
        self.core.notify(queue)

    # -- registers ----------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        if offset >= VIRTIO_MMIO_CONFIG:
            return self.device.read_config(offset - VIRTIO_MMIO_CONFIG, size)
        if size != 4 or offset % 4:
            return bytes(size)  # §4.2.2.2: the driver uses 32-bit accesses only
        return (self._read32(offset) & 0xFFFFFFFF).to_bytes(4, "little")

    def _read32(self, offset: int) -> int:
        core = self.core
        q = core.selected_queue()
        if offset == VIRTIO_MMIO_MAGIC_VALUE:
            return VIRTIO_MMIO_MAGIC
        if offset == VIRTIO_MMIO_VERSION_REG:
            return VIRTIO_MMIO_VERSION
        if offset == VIRTIO_MMIO_DEVICE_ID:
            return self.device.device_type
        if offset == VIRTIO_MMIO_VENDOR_ID_REG:
            return VIRTIO_MMIO_VENDOR_ID
        if offset == VIRTIO_MMIO_DEVICE_FEATURES:
            return core.device_features_word()
        if offset == VIRTIO_MMIO_QUEUE_NUM_MAX:
            return q.max_size if q else 0
        if offset == VIRTIO_MMIO_QUEUE_READY:
            return int(q.ready) if q else 0
        if offset == VIRTIO_MMIO_INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == VIRTIO_MMIO_STATUS:
            return core.status
        if offset in (VIRTIO_MMIO_SHM_LEN_LOW, VIRTIO_MMIO_SHM_LEN_HIGH):
            return 0xFFFFFFFF  # no shared memory regions (§4.2.2)
        if offset == VIRTIO_MMIO_CONFIG_GENERATION:
            return self.device.config_generation
        return 0

    def write(self, offset: int, data: bytes) -> None:
        if offset >= VIRTIO_MMIO_CONFIG:
            self.device.write_config(offset - VIRTIO_MMIO_CONFIG, data)
            return
        if len(data) != 4 or offset % 4:
            return
        value = int.from_bytes(data, "little")
        core = self.core
        if offset == VIRTIO_MMIO_DEVICE_FEATURES_SEL:
            core.device_feature_select = value
        elif offset == VIRTIO_MMIO_DRIVER_FEATURES:
            core.write_driver_features_word(value)
        elif offset == VIRTIO_MMIO_DRIVER_FEATURES_SEL:
            core.driver_feature_select = value
        elif offset == VIRTIO_MMIO_QUEUE_SEL:
            core.queue_select = value
        elif offset == VIRTIO_MMIO_QUEUE_NOTIFY:
            if value < self.device.num_queues:
                self.notify(value)
        elif offset == VIRTIO_MMIO_INTERRUPT_ACK:
            self._ack(value)
        elif offset == VIRTIO_MMIO_STATUS:
            core.write_status(value)
            if core.status == 0:
                self._ack(0xFFFFFFFF)
        else:
            self._write_queue(offset, value)

    def _write_queue(self, offset: int, value: int) -> None:
        core = self.core
        q = core.selected_queue()
        if q is None or not core.queue_config_allowed():
            return
        if offset == VIRTIO_MMIO_QUEUE_NUM:
            q.set_size(value)
        elif offset == VIRTIO_MMIO_QUEUE_READY:
            q.set_ready(bool(value & 1))
        elif offset == VIRTIO_MMIO_QUEUE_DESC_LOW:
            q.set_desc_table_address(low=value)
        elif offset == VIRTIO_MMIO_QUEUE_DESC_HIGH:
            q.set_desc_table_address(high=value)
        elif offset == VIRTIO_MMIO_QUEUE_AVAIL_LOW:
            q.set_avail_ring_address(low=value)
        elif offset == VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
            q.set_avail_ring_address(high=value)
        elif offset == VIRTIO_MMIO_QUEUE_USED_LOW:
            q.set_used_ring_address(low=value)
        elif offset == VIRTIO_MMIO_QUEUE_USED_HIGH:
            q.set_used_ring_address(high=value)

    # -- state ---------------------------------------------------------------------------------

    def save(self) -> VirtioMmioState:
        """The transport's state; save ``self.device`` separately."""
        return VirtioMmioState(self.core.save(), self.interrupt_status)

    def load_state(self, state: VirtioMmioState) -> None:
        """Apply after the device's own state: re-activates the device when DRIVER_OK."""
        with self._lock:
            self.interrupt_status = state.interrupt_status
            self.irq.set_level(bool(self.interrupt_status))
        self.core.load_state(state.transport)

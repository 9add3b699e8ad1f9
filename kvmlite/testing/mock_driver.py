"""The guest (driver) side of a split virtqueue, for testing device models.

``MockDriver`` plays the role of a guest driver following virtio 1.2 §2.7.13
("Supplying Buffers to The Device") and §2.7.14 ("Receiving Used Buffers"):
it lays out a descriptor table, available ring and used ring in a
``GuestMemory`` (usually a ``bytearray`` via ``GuestMemory.from_buffer``),
places buffers in a data area, publishes chains and reads used entries.

It can also build deliberately malformed chains (loops, out-of-range
addresses and indices, nested indirect tables, writable-before-readable) with
``write_descriptor`` + ``publish`` so tests can check a device survives them.

Example::

    mem = GuestMemory.from_buffer(bytearray(1 << 20))
    drv = MockDriver(mem, queue_size=16)
    queue = VirtQueue(16)
    drv.configure(queue)                      # or program a transport
    chain = drv.add_chain([b"request"], [64])  # 1 readable, 1 writable buffer
    ...device processes the queue...
    for used in drv.get_used():
        print(used.head, used.length, drv.read_writable(used.head))
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kvmlite.devices.virtio.device import VirtioDevice
from kvmlite.devices.virtio.queue import DESC_SIZE, VirtQueue
from kvmlite.devices.virtio.spec import (
    VIRTIO_F_EVENT_IDX,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    VIRTQ_USED_F_NO_NOTIFY,
)
from kvmlite.memory import GuestMemory
from kvmlite.testing.interrupts import RecordingInterrupt

_DESC = struct.Struct("<QIHH")


@dataclass
class SubmittedChain:
    """What the driver put in one chain (to check what the device wrote)."""

    head: int
    descriptors: list[int]
    readable: list[tuple[int, int]] = field(default_factory=list)
    writable: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class UsedEntry:
    """One used-ring entry; ``written`` holds the chain's writable buffers' bytes."""

    head: int
    length: int
    written: bytes = b""


class MockDriver:
    """A split-ring driver over guest memory.

    ``base`` is the guest-physical address of the ring area; the data area
    for buffers follows it and is ``data_size`` bytes long (default: the rest
    of that RAM region). ``notify`` is
    called by ``kick()`` (wire it to ``device.process_queue(i)`` or a
    transport's notify register).
    """

    def __init__(
        self,
        memory: GuestMemory,
        queue_size: int,
        *,
        base: int | None = None,
        data_size: int | None = None,
        event_idx: bool = False,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.memory = memory
        self.size = queue_size
        self.event_idx = event_idx
        self.notify = notify
        if base is None:
            base = memory.regions[0].gpa
        self.desc_table = _align(base, 16)
        self.avail_ring = self.desc_table + DESC_SIZE * queue_size
        self.used_ring = _align(self.avail_ring + 6 + 2 * queue_size, 4)
        self.data_start = _align(self.used_ring + 6 + 8 * queue_size, 4096)
        if data_size is None:  # the rest of the region the rings are in
            data_size = memory.region_of(self.desc_table).end - self.data_start
        self.data_end = self.data_start + data_size
        if data_size < 0 or not memory.contains(self.desc_table, self.data_end - self.desc_table):
            raise ValueError("MockDriver rings and data area do not fit in the guest memory")
        memory.fill(self.desc_table, self.data_start - self.desc_table)
        self._data_next = self.data_start
        self._free = list(range(queue_size))
        self.avail_idx = 0
        self._kicked_idx = 0
        self.last_used = 0
        self.chains: dict[int, SubmittedChain] = {}

    # -- setup --------------------------------------------------------------------

    def configure(self, queue: VirtQueue) -> None:
        """Program a VirtQueue directly, as a transport would on the driver's writes."""
        queue.set_size(self.size)
        queue.set_desc_table_address(self.desc_table & 0xFFFFFFFF, self.desc_table >> 32)
        queue.set_avail_ring_address(self.avail_ring & 0xFFFFFFFF, self.avail_ring >> 32)
        queue.set_used_ring_address(self.used_ring & 0xFFFFFFFF, self.used_ring >> 32)
        queue.set_event_idx(self.event_idx)
        queue.set_ready(True)

    def alloc(self, length: int, align: int = 16) -> int:
        """Reserve ``length`` bytes of the data area; returns their address."""
        addr = _align(self._data_next, align)
        if addr + length > self.data_end:
            # Wrap around: tests submit far fewer bytes at once than the area holds.
            addr = self.data_start
        self._data_next = addr + length
        return addr

    # -- well-formed chains ----------------------------------------------------------

    def add_chain(
        self,
        readable: Sequence[bytes] = (),
        writable: Sequence[int] = (),
        *,
        indirect: bool = False,
        publish: bool = True,
    ) -> SubmittedChain:
        """Place buffers and make a chain of them available; returns what was placed."""
        bufs: list[tuple[int, int, bool]] = []
        for data in readable:
            addr = self.alloc(max(len(data), 1))
            self.memory.write(addr, data)
            bufs.append((addr, len(data), False))
        for length in writable:
            addr = self.alloc(max(length, 1))
            self.memory.fill(addr, max(length, 1), 0xAA)
            bufs.append((addr, length, True))
        if not bufs:
            raise ValueError("a chain needs at least one buffer")
        if indirect:
            table = self.alloc(DESC_SIZE * len(bufs))
            for i, (addr, length, w) in enumerate(bufs):
                flags = (VIRTQ_DESC_F_WRITE if w else 0) | (
                    VIRTQ_DESC_F_NEXT if i + 1 < len(bufs) else 0
                )
                self.memory.write(table + DESC_SIZE * i, _DESC.pack(addr, length, flags, i + 1))
            head = self._take(1)[0]
            self.write_descriptor(head, table, DESC_SIZE * len(bufs), VIRTQ_DESC_F_INDIRECT, 0)
            descs = [head]
        else:
            descs = self._take(len(bufs))
            for i, (addr, length, w) in enumerate(bufs):
                last = i + 1 == len(bufs)
                flags = (VIRTQ_DESC_F_WRITE if w else 0) | (0 if last else VIRTQ_DESC_F_NEXT)
                self.write_descriptor(descs[i], addr, length, flags, 0 if last else descs[i + 1])
        chain = SubmittedChain(
            descs[0],
            descs,
            [(a, n) for a, n, w in bufs if not w],
            [(a, n) for a, n, w in bufs if w],
        )
        self.chains[chain.head] = chain
        if publish:
            self.publish(chain.head)
        return chain

    def add_raw_chain(self, bufs: Sequence[tuple[int, int, bool]]) -> int:
        """Publish a chain of ``(addr, length, writable)`` buffers as given; its head.

        Nothing is placed or checked: buffers may overlap each other, the
        rings, or all of RAM (for guest-memory budget tests).
        """
        descs = self._take(len(bufs))
        for i, (addr, length, w) in enumerate(bufs):
            last = i + 1 == len(bufs)
            flags = (VIRTQ_DESC_F_WRITE if w else 0) | (0 if last else VIRTQ_DESC_F_NEXT)
            self.write_descriptor(descs[i], addr, length, flags, 0 if last else descs[i + 1])
        self.publish(descs[0])
        return descs[0]

    def _take(self, n: int) -> list[int]:
        if len(self._free) < n:
            raise ValueError(f"MockDriver: {n} descriptors wanted, {len(self._free)} free")
        taken, self._free = self._free[:n], self._free[n:]
        return taken

    # -- raw access for malformed chains -----------------------------------------------

    def write_descriptor(self, index: int, addr: int, length: int, flags: int, next_: int) -> None:
        """Write descriptor ``index`` of the table verbatim (any values, for bad chains)."""
        self.memory.write(
            self.desc_table + DESC_SIZE * index, _DESC.pack(addr, length, flags, next_)
        )

    def write_indirect_table(self, addr: int, descs: Sequence[tuple[int, int, int, int]]) -> None:
        """Write raw (addr, len, flags, next) entries of an indirect table at ``addr``."""
        for i, d in enumerate(descs):
            self.memory.write(addr + DESC_SIZE * i, _DESC.pack(*d))

    def publish(self, head: int) -> None:
        """Put ``head`` in the next avail slot and bump avail idx (§2.7.13.2-3)."""
        slot = self.avail_ring + 4 + 2 * (self.avail_idx % self.size)
        self.memory.write_int(slot, 2, head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.memory.write_int(self.avail_ring + 2, 2, self.avail_idx)

    def set_avail_idx(self, value: int) -> None:
        """Write avail idx verbatim (to test a driver that runs too far ahead)."""
        self.avail_idx = value & 0xFFFF
        self.memory.write_int(self.avail_ring + 2, 2, self.avail_idx)

    # -- notifications ----------------------------------------------------------------

    def kick(self, force: bool = False) -> bool:
        """Notify the device if it asked for it, as Linux's virtqueue_kick does.

        With EVENT_IDX the kick goes out only if avail idx moved past the
        device's ``avail_event`` since the last kick (§2.7.10); without it,
        unless the device set VIRTQ_USED_F_NO_NOTIFY. ``force`` always kicks.
        Returns whether ``notify`` was called.
        """
        new, old = self.avail_idx, self._kicked_idx
        self._kicked_idx = new
        if self.event_idx:
            wanted = ((new - self.avail_event() - 1) & 0xFFFF) < ((new - old) & 0xFFFF)
        else:
            wanted = self.device_wants_kick()
        if (wanted or force) and self.notify is not None:
            self.notify()
            return True
        return False

    def device_wants_kick(self) -> bool:
        """Without EVENT_IDX: whether the device cleared VIRTQ_USED_F_NO_NOTIFY."""
        return not self.memory.read_int(self.used_ring, 2) & VIRTQ_USED_F_NO_NOTIFY

    def avail_event(self) -> int:
        """With EVENT_IDX: the avail idx the device wants a kick after."""
        return self.memory.read_int(self.used_ring + 4 + 8 * self.size, 2)

    def set_no_interrupt(self, on: bool) -> None:
        """Set or clear VIRTQ_AVAIL_F_NO_INTERRUPT."""
        self.memory.write_int(self.avail_ring, 2, VIRTQ_AVAIL_F_NO_INTERRUPT if on else 0)

    def set_used_event(self, value: int) -> None:
        """EVENT_IDX: interrupt me when used idx passes ``value``."""
        self.memory.write_int(self.avail_ring + 4 + 2 * self.size, 2, value & 0xFFFF)

    # -- used ring ------------------------------------------------------------------------

    @property
    def used_idx(self) -> int:
        return self.memory.read_int(self.used_ring + 2, 2)

    def get_used(self) -> list[UsedEntry]:
        """New used entries since the last call; frees their descriptors."""
        out = []
        idx = self.used_idx
        while self.last_used != idx:
            elem = self.used_ring + 4 + 8 * (self.last_used % self.size)
            head, length = struct.unpack("<II", self.memory.read(elem, 8))
            chain = self.chains.pop(head, None)
            written = b""
            if chain is not None:
                self._free.extend(chain.descriptors)
                written = b"".join(self.memory.read(a, n) for a, n in chain.writable)
            out.append(UsedEntry(head, length, written))
            self.last_used = (self.last_used + 1) & 0xFFFF
        if self.event_idx:
            # Like Linux's virtqueue_enable_cb: interrupt me for the next one.
            self.set_used_event(self.last_used)
        return out


def _align(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


def attach_drivers(
    device: VirtioDevice,
    memory: GuestMemory,
    *,
    features: int | None = None,
    queue_size: int | None = None,
) -> tuple[list[MockDriver], list[RecordingInterrupt], RecordingInterrupt]:
    """Negotiate features and activate ``device`` with one MockDriver per queue.

    Does what a transport does at DRIVER_OK, without a transport: splits the
    first RAM region into one area per queue, acks ``features`` (default: all
    offered), activates with ``RecordingInterrupt`` objects and wires each
    driver's ``kick()`` to ``device.process_queue(i)``. Returns the drivers,
    the per-queue interrupts and the config interrupt.
    """
    device.ack_features(device.avail_features if features is None else features)
    event_idx = device.has_feature(VIRTIO_F_EVENT_IDX)
    region = memory.regions[0]
    share = (region.size // device.num_queues) & ~0xFFF
    drivers, queues = [], []
    for i, max_size in enumerate(device.queue_max_sizes):
        size = min(max_size, queue_size or max_size)
        drv = MockDriver(
            memory,
            size,
            base=region.gpa + i * share,
            data_size=share - _align(16 * size + 6 + 2 * size + 8 * size + 16, 4096) - 4096,
            event_idx=event_idx,
            notify=functools.partial(device.process_queue, i),
        )
        q = VirtQueue(max_size)
        drv.configure(q)
        drivers.append(drv)
        queues.append(q)
    irqs = [RecordingInterrupt() for _ in queues]
    config_irq = RecordingInterrupt()
    device.activate(memory, queues, irqs, config_irq)
    return drivers, irqs, config_irq

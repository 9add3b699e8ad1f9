"""A transport-agnostic split virtqueue (virtio 1.2 §2.7, "Split Virtqueues").

Theory of operation
-------------------
``VirtQueue`` is the device's side of one split ring, shaped after rust-vmm's
``virtio-queue`` crate (DESIGN.md rule 2): the setters mirror the transport
registers (size, descriptor/driver/device area addresses, ready, EVENT_IDX),
guest memory is passed into every call that touches the ring, and the queue
never notifies anyone itself. The PCI and MMIO transports, a vhost-user
backend and the unit tests all drive the same object.

Guest layout (all little-endian)::

    descriptor table  16 bytes each: addr u64, len u32, flags u16, next u16
    available ring    flags u16, idx u16, ring[size] u16, used_event u16
    used ring         flags u16, idx u16, ring[size] {id u32, len u32},
                      avail_event u16

Invariants:

* ``next_avail`` is the next avail-ring slot the device will consume and
  ``next_used`` the next used-ring slot it will fill, both free-running u16.
* With EVENT_IDX, ``pop`` keeps ``avail_event`` equal to ``next_avail``, so
  the driver kicks for every chain added after the ones we consumed; devices
  need not manage notifications to keep receiving kicks.
* A guest can never make ``pop`` loop forever, touch memory outside RAM or
  raise anything but ``QueueError``/``ChainError``: every chain is walked
  with a hard limit (the queue size), indirect tables are bounds-checked and
  may not nest, and every buffer is checked to lie in guest RAM before the
  chain is handed to a device.

Memory ordering: the guest runs on other CPUs while we read and write the
rings. On x86 (TSO) loads are not reordered with loads and stores not with
stores, and CPython executes our loads/stores in program order, so "read
avail idx, then read ring entries" and "write used element, then publish used
idx" need no barrier. A store followed by a load of another location *can* be
reordered, which matters exactly where the spec asks for a full barrier:
after publishing used idx and before reading ``used_event``/avail flags
(``needs_notification``), and after writing ``avail_event``/clearing
NO_NOTIFY and before re-reading avail idx (``enable_notification``). A
``threading.Lock`` acquire is a locked (fully fencing) instruction, so
``_full_barrier()`` uses one.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

from kvmlite.devices.persist import Persist
from kvmlite.devices.virtio.chain import ChainError, Descriptor, DescriptorChain, QueueError
from kvmlite.devices.virtio.spec import (
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    VIRTQ_MAX_SIZE,
    VIRTQ_USED_F_NO_NOTIFY,
)
from kvmlite.errors import GuestMemoryError
from kvmlite.memory import GuestMemory

DESC_SIZE = 16
_DESC = struct.Struct("<QIHH")
_USED_ELEM = struct.Struct("<II")
_U16 = struct.Struct("<H")
_FENCE = threading.Lock()


def _full_barrier() -> None:
    # A locked RMW instruction orders earlier stores before later loads (see
    # the module docstring); this is what the spec's "memory barrier" means.
    with _FENCE:
        pass


@dataclass(frozen=True)
class VirtQueueState:
    """Everything needed to resume a queue (DESIGN.md rule 4)."""

    max_size: int
    size: int
    ready: bool
    desc_table: int
    avail_ring: int
    used_ring: int
    next_avail: int
    next_used: int
    event_idx: bool
    num_added: int


class VirtQueue(Persist[VirtQueueState]):
    """The device side of one split virtqueue."""

    def __init__(self, max_size: int) -> None:
        if not 1 <= max_size <= VIRTQ_MAX_SIZE or max_size & (max_size - 1):
            raise ValueError(f"queue max size {max_size} must be a power of two <= 32768")
        self.max_size = max_size
        self.reset()

    # -- register-shaped setters ----------------------------------------------

    def reset(self) -> None:
        """Back to the state after device reset (§2.4)."""
        self.size = self.max_size
        self.ready = False
        self.desc_table = 0
        self.avail_ring = 0
        self.used_ring = 0
        self.next_avail = 0
        self.next_used = 0
        self.event_idx = False
        self._views: tuple[memoryview, memoryview, memoryview] | None = None
        self._views_memory: GuestMemory | None = None
        self._views_key: tuple[int, int, int, int] | None = None
        # Used entries added since the last needs_notification(): lets the
        # EVENT_IDX check compute "old" without another memory read.
        self.num_added = 0

    def set_size(self, size: int) -> None:
        """Queue Size register; invalid values are kept and rejected by ``is_valid``."""
        self.size = size & 0xFFFF

    def set_ready(self, ready: bool) -> None:
        self.ready = ready

    def set_event_idx(self, enabled: bool) -> None:
        """Whether VIRTIO_F_EVENT_IDX was negotiated."""
        self.event_idx = enabled

    @staticmethod
    def _merge(old: int, low: int | None, high: int | None) -> int:
        if low is not None:
            old = (old & ~0xFFFFFFFF) | (low & 0xFFFFFFFF)
        if high is not None:
            old = (old & 0xFFFFFFFF) | ((high & 0xFFFFFFFF) << 32)
        return old

    def set_desc_table_address(self, low: int | None = None, high: int | None = None) -> None:
        self.desc_table = self._merge(self.desc_table, low, high)

    def set_avail_ring_address(self, low: int | None = None, high: int | None = None) -> None:
        self.avail_ring = self._merge(self.avail_ring, low, high)

    def set_used_ring_address(self, low: int | None = None, high: int | None = None) -> None:
        self.used_ring = self._merge(self.used_ring, low, high)

    def set_next_avail(self, index: int) -> None:
        self.next_avail = index & 0xFFFF

    def set_next_used(self, index: int) -> None:
        self.next_used = index & 0xFFFF

    # -- validity ---------------------------------------------------------------

    def is_valid(self, memory: GuestMemory) -> bool:
        """Ready, a power-of-two size within max, aligned rings inside guest RAM."""
        s = self.size
        if not self.ready or s == 0 or s > self.max_size or s & (s - 1):
            return False
        if self.desc_table % 16 or self.avail_ring % 2 or self.used_ring % 4:
            return False
        return (
            memory.contains(self.desc_table, DESC_SIZE * s)
            and memory.contains(self.avail_ring, 6 + 2 * s)
            and memory.contains(self.used_ring, 6 + 8 * s)
        )

    # -- ring views -----------------------------------------------------------------

    def _rings(self, memory: GuestMemory) -> tuple[memoryview, memoryview, memoryview]:
        """Zero-copy views of (descriptor table, avail ring, used ring), cached.

        The cache is keyed on everything that places the rings, so a register
        write or another memory object simply misses it. Looking the regions up
        once per layout instead of once per field is most of pop()'s speed.
        """
        key = (self.desc_table, self.avail_ring, self.used_ring, self.size)
        if self._views is not None and self._views_memory is memory and self._views_key == key:
            return self._views
        s = self.size
        if s == 0 or s > self.max_size or s & (s - 1):
            raise QueueError(f"queue size {s} is not a power of two <= {self.max_size}")
        try:
            views = (
                memory.view(self.desc_table, DESC_SIZE * s),
                memory.view(self.avail_ring, 6 + 2 * s),
                memory.view(self.used_ring, 6 + 8 * s),
            )
        except GuestMemoryError as e:
            raise QueueError(f"rings outside guest RAM: {e}") from None
        self._views, self._views_memory, self._views_key = views, memory, key
        return views

    # -- available ring -----------------------------------------------------------

    def avail_idx(self, memory: GuestMemory) -> int:
        return _U16.unpack_from(self._rings(memory)[1], 2)[0]

    def pending(self, memory: GuestMemory) -> int:
        """How many chains the driver has made available that we have not popped."""
        return self._pending(self._rings(memory)[1])

    def _pending(self, avail: memoryview) -> int:
        n = (_U16.unpack_from(avail, 2)[0] - self.next_avail) & 0xFFFF
        if n > self.size:
            raise QueueError(f"avail idx is {n} entries ahead of a queue of {self.size}")
        return n

    def pop(self, memory: GuestMemory) -> DescriptorChain | None:
        """Take the next available chain, or None when the ring is empty.

        Raises ``QueueError`` if the ring is corrupt, ``ChainError`` (after
        consuming the entry, so the device can return it) if the chain is.
        """
        if not self.ready:
            return None
        table, avail, used = self._rings(memory)  # once: pop is the hot path
        size = self.size
        if self._pending(avail) == 0:
            if not self.event_idx:
                return None
            # Publish "kick me after next_avail" before concluding the ring is
            # empty, then look again: a chain added in between either sees
            # our avail_event (and kicks) or is seen here (§2.7.10).
            _U16.pack_into(used, 4 + 8 * size, self.next_avail)
            _full_barrier()
            if self._pending(avail) == 0:
                return None
        head = _U16.unpack_from(avail, 4 + 2 * (self.next_avail % size))[0]
        self.next_avail = (self.next_avail + 1) & 0xFFFF
        if self.event_idx:
            # Keep avail_event just past what we consumed, like QEMU's
            # virtqueue_pop: a device that never re-enables notifications
            # would otherwise stop getting kicks after the first one.
            _U16.pack_into(used, 4 + 8 * size, self.next_avail)
        if head >= size:
            raise ChainError(head, f"head index {head} >= queue size {size}")
        return self._walk(memory, head, table)

    def chain_at(self, memory: GuestMemory, head: int) -> DescriptorChain:
        """Re-walk the chain starting at descriptor ``head`` (restoring in-flight requests)."""
        if head >= self.size:
            raise ChainError(head, f"head index {head} >= queue size {self.size}")
        return self._walk(memory, head, self._rings(memory)[0])

    def go_back(self) -> None:
        """Un-pop the last chain (the device could not take it now: back-pressure)."""
        self.next_avail = (self.next_avail - 1) & 0xFFFF

    def _walk(self, memory: GuestMemory, head: int, table: memoryview) -> DescriptorChain:
        addr, length, flags, _ = _DESC.unpack_from(table, DESC_SIZE * head)
        if not flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT):
            # One direct descriptor: what virtio-net receive buffers and many
            # other chains are. The same checks as below, without the loop.
            if length and not memory.contains(addr, length):
                raise ChainError(head, f"buffer {addr:#x}+{length:#x} is outside guest RAM")
            return DescriptorChain(
                head, [Descriptor(addr, length, bool(flags & VIRTQ_DESC_F_WRITE))]
            )
        chain = DescriptorChain(head)
        append = chain.descriptors.append
        table_len = self.size
        index = head
        in_indirect = False
        seen = 0
        seen_writable = False
        limit = self.size  # total descriptors in a chain (§2.7.5.3.1)
        contains = memory.contains
        while True:
            seen += 1
            if seen > limit:
                raise ChainError(head, f"chain longer than {limit} descriptors (a loop?)")
            addr, length, flags, nxt = _DESC.unpack_from(table, DESC_SIZE * index)
            if flags & VIRTQ_DESC_F_INDIRECT:
                if in_indirect:
                    raise ChainError(head, "nested indirect descriptor table")
                if flags & VIRTQ_DESC_F_NEXT:
                    raise ChainError(head, "indirect descriptor with NEXT set")
                if length == 0 or length % DESC_SIZE:
                    raise ChainError(head, f"indirect table length {length} not a multiple of 16")
                n = length // DESC_SIZE
                if n > limit:
                    raise ChainError(head, f"indirect table of {n} descriptors > {limit}")
                if not contains(addr, length):
                    raise ChainError(head, f"indirect table {addr:#x}+{length:#x} outside RAM")
                table, table_len, index, in_indirect = memory.view(addr, length), n, 0, True
                # The table's entries are counted on their own, like QEMU's
                # virtqueue_pop: a full table (queue-size entries, which Linux
                # builds for large requests) is legal; its pointer does not count.
                seen, limit = 0, n
                continue
            writable = bool(flags & VIRTQ_DESC_F_WRITE)
            if seen_writable and not writable:
                raise ChainError(head, "readable descriptor after a writable one")
            seen_writable |= writable
            if length and not contains(addr, length):
                raise ChainError(head, f"buffer {addr:#x}+{length:#x} is outside guest RAM")
            append(Descriptor(addr, length, writable))
            if not flags & VIRTQ_DESC_F_NEXT:
                return chain
            if nxt >= table_len:
                raise ChainError(head, f"next index {nxt} outside a table of {table_len}")
            index = nxt

    # -- used ring --------------------------------------------------------------

    def add_used(
        self, memory: GuestMemory, head: int, length: int, *, publish: bool = True
    ) -> None:
        """Return chain ``head`` to the driver with ``length`` bytes written.

        ``publish=False`` writes the used element but not used idx, so that
        several chains become visible together with ``publish_used`` (a
        virtio-net frame over mergeable buffers, §5.1.6.4.2: the driver must
        see all ``num_buffers`` of a frame at once).
        """
        if head >= self.size:
            raise QueueError(f"used head {head} >= queue size {self.size}")
        used = self._rings(memory)[2]
        _USED_ELEM.pack_into(used, 4 + 8 * (self.next_used % self.size), head, length & 0xFFFFFFFF)
        self.next_used = (self.next_used + 1) & 0xFFFF
        if publish:
            # Element before index: x86 keeps stores in order (module docstring).
            _U16.pack_into(used, 2, self.next_used)
        self.num_added += 1

    def publish_used(self, memory: GuestMemory) -> None:
        """Write used idx for the elements added with ``publish=False``."""
        _U16.pack_into(self._rings(memory)[2], 2, self.next_used)

    def needs_notification(self, memory: GuestMemory) -> bool:
        """Whether the driver wants an interrupt for the used entries added so far.

        Without EVENT_IDX: unless avail flags has NO_INTERRUPT. With EVENT_IDX
        (§2.7.10): iff used idx crossed ``used_event`` since the last call.
        """
        avail = self._rings(memory)[1]
        _full_barrier()
        old = (self.next_used - self.num_added) & 0xFFFF
        new = self.next_used
        self.num_added = 0
        if self.event_idx:
            used_event = _U16.unpack_from(avail, 4 + 2 * self.size)[0]
            return ((new - used_event - 1) & 0xFFFF) < ((new - old) & 0xFFFF)
        return not _U16.unpack_from(avail, 0)[0] & VIRTQ_AVAIL_F_NO_INTERRUPT

    # -- notification suppression (§2.7.7/§2.7.10) --------------------------------

    def _set_notification(self, memory: GuestMemory, enable: bool) -> None:
        used = self._rings(memory)[2]
        if self.event_idx:
            if enable:
                _U16.pack_into(used, 4 + 8 * self.size, self.next_avail)
            return
        flags = _U16.unpack_from(used, 0)[0]
        if enable:
            flags &= ~VIRTQ_USED_F_NO_NOTIFY
        else:
            flags |= VIRTQ_USED_F_NO_NOTIFY
        _U16.pack_into(used, 0, flags)

    def disable_notification(self, memory: GuestMemory) -> None:
        """Ask the driver not to kick (we are polling)."""
        self._set_notification(memory, False)

    def enable_notification(self, memory: GuestMemory) -> bool:
        """Ask for kicks again; True if chains arrived meanwhile (poll once more)."""
        self._set_notification(memory, True)
        _full_barrier()
        return self.pending(memory) > 0

    # -- state ----------------------------------------------------------------------

    def save(self) -> VirtQueueState:
        return VirtQueueState(
            max_size=self.max_size,
            size=self.size,
            ready=self.ready,
            desc_table=self.desc_table,
            avail_ring=self.avail_ring,
            used_ring=self.used_ring,
            next_avail=self.next_avail,
            next_used=self.next_used,
            event_idx=self.event_idx,
            num_added=self.num_added,
        )

    def load_state(self, state: VirtQueueState) -> None:
        from kvmlite.errors import StateError

        if state.max_size != self.max_size:
            raise StateError(
                f"queue max size {state.max_size} in the snapshot differs from {self.max_size}:"
                " restore into a machine built with the same configuration"
            )
        self.size = state.size
        self.ready = state.ready
        self.desc_table = state.desc_table
        self.avail_ring = state.avail_ring
        self.used_ring = state.used_ring
        self.next_avail = state.next_avail & 0xFFFF
        self.next_used = state.next_used & 0xFFFF
        self.event_idx = state.event_idx
        self.num_added = state.num_added

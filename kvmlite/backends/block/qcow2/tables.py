"""qcow2 L1/L2 tables and the L2 cache (qcow2.txt, "Cluster mapping").

An L2 entry (standard, 64-bit) is one of:

* unallocated: 0 (reads from the backing file, or zeros);
* normal: bits 9-55 host cluster offset, bit 63 COPIED (refcount is exactly 1,
  so the cluster may be written in place);
* zero: bit 0 set (version 3), with or without a preallocated host cluster;
* compressed: bit 62 set; bits 0..x-1 host byte offset and bits x..61 the number
  of additional 512-byte sectors, with x = 62 - (cluster_bits - 8).

Tables are written through one entry at a time (an 8-byte ``pwrite`` is the
unit of metadata update), so the cache never holds dirty data.
"""

from __future__ import annotations

import array
import sys
from collections import OrderedDict

from kvmlite.backends.block.qcow2.hostfile import HostFile
from kvmlite.errors import ImageError

OFLAG_COPIED = 1 << 63
OFLAG_COMPRESSED = 1 << 62
OFLAG_ZERO = 1
OFFSET_MASK = 0x00FFFFFFFFFFFE00
L1_RESERVED = 0x7F000000000001FF

# Cluster kinds (classify()).
UNALLOCATED = 0
ZERO_PLAIN = 1
ZERO_ALLOC = 2
NORMAL = 3
COMPRESSED = 4


def be_u64(raw: bytes) -> array.array:
    a = array.array("Q", raw)
    if sys.byteorder == "little":
        a.byteswap()
    return a


def to_be(a: array.array) -> bytes:
    b = array.array("Q", a)
    if sys.byteorder == "little":
        b.byteswap()
    return b.tobytes()


class EntryCodec:
    """Decodes L2 entries for one cluster size."""

    def __init__(self, cluster_bits: int) -> None:
        self.cluster_bits = cluster_bits
        self.cs = 1 << cluster_bits
        self.csize_shift = 62 - (cluster_bits - 8)
        self.csize_mask = (1 << (cluster_bits - 8)) - 1
        self.coffset_mask = (1 << self.csize_shift) - 1

    def classify(self, entry: int) -> tuple[int, int]:
        """(kind, host offset) of an L2 entry; host offset is 0 where none."""
        if entry & OFLAG_COMPRESSED:
            return COMPRESSED, entry & self.coffset_mask
        off = entry & OFFSET_MASK
        if entry & OFLAG_ZERO:
            return (ZERO_ALLOC, off) if off else (ZERO_PLAIN, 0)
        if not off:
            return UNALLOCATED, 0
        return NORMAL, off

    def compressed_range(self, entry: int) -> tuple[int, int, int]:
        """(data offset, sector-aligned start, length of the sector run) of a compressed entry."""
        off = entry & self.coffset_mask
        nsect = ((entry >> self.csize_shift) & self.csize_mask) + 1
        start = off & ~511
        return off, start, nsect * 512

    def compressed_entry(self, offset: int, length: int) -> int:
        nsect = ((offset + length - 1) >> 9) - (offset >> 9)
        return OFLAG_COMPRESSED | (nsect << self.csize_shift) | offset


class L2Cache:
    """LRU cache of decoded L2 tables, keyed by host offset, write-through."""

    def __init__(self, f: HostFile, cluster_size: int, capacity: int) -> None:
        self.f = f
        self.cs = cluster_size
        self.capacity = max(1, capacity)
        self._tables: OrderedDict[int, array.array] = OrderedDict()

    def get(self, offset: int) -> array.array:
        t = self._tables.get(offset)
        if t is not None:
            self._tables.move_to_end(offset)
            return t
        if offset % self.cs:
            raise ImageError(f"{self.f.name}: L2 table offset {offset} is misaligned")
        t = be_u64(self.f.pread(offset, self.cs, "L2 table"))
        self._insert(offset, t)
        return t

    def _insert(self, offset: int, t: array.array) -> None:
        self._tables[offset] = t
        if len(self._tables) > self.capacity:
            self._tables.popitem(last=False)

    def create(self, offset: int, t: array.array) -> None:
        """Write a whole new table (zeroed or copied) and cache it."""
        self.f.pwrite(offset, to_be(t))
        self._insert(offset, t)

    def set(self, offset: int, index: int, value: int) -> None:
        t = self.get(offset)
        t[index] = value
        self.f.pwrite(offset + index * 8, value.to_bytes(8, "big"))

    def drop(self, offset: int) -> None:
        self._tables.pop(offset, None)

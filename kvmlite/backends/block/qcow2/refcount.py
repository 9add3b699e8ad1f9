"""qcow2 reference counts and cluster allocation (qcow2.txt, "Host cluster management").

A two-level structure: the refcount table (an array of 64-bit offsets of
refcount blocks) and refcount blocks (arrays of ``2**refcount_order``-bit
entries, one per host cluster). Entries narrower than a byte are packed from
the least significant bit, as QEMU does.

Theory of operation (crash safety; see docs/qcow2.md):

* Metadata is written through: every change is one ``pwrite`` issued in a
  safe order, so a process killed at any point leaves at most leaked clusters.
* Allocation raises a cluster's refcount *before* anything points at it, and a
  pointer is cleared *before* its cluster's refcount drops. Drops are queued
  and applied only after the next ``fdatasync`` (``apply_frees``), so even a
  power loss can only leak.
* For power loss, refcount increments must be stable before the L2 entries
  that use them. Doing an fdatasync per allocation would be slow, so clusters
  are *reserved* in batches: refcounts for a run of clusters are set and synced
  once, then handed out. Unused reserved clusters are released on close; a
  crash merely leaks them.
* A new refcount block is written (with its own refcount) and synced before
  the table entry that points at it; a grown table is written and synced in
  full before the header switches to it.
"""

from __future__ import annotations

import array
import os
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable

from kvmlite.backends.block.qcow2.hostfile import HostFile
from kvmlite.errors import ImageError

_TYPECODES = {3: "B", 4: "H", 5: "I", 6: "Q"}
RESERVE_BYTES = 4 << 20  # how much to reserve per fdatasync barrier
BLOCK_CACHE = 64  # refcount blocks kept decoded


class RefcountError(ImageError):
    """A refcount would overflow or underflow: the image is inconsistent."""


class Refcounts:
    """The refcount table and blocks of one image, with a free-cluster allocator."""

    def __init__(
        self,
        f: HostFile,
        cluster_bits: int,
        refcount_order: int,
        table_offset: int,
        table_clusters: int,
        set_table: Callable[[int, int], None],
        barrier: Callable[[], None],
    ) -> None:
        self.f = f
        self.cluster_bits = cluster_bits
        self.cs = 1 << cluster_bits
        self.order = refcount_order
        self.bits = 1 << refcount_order
        self.max = (1 << self.bits) - 1
        self.per_block = (self.cs * 8) >> refcount_order
        self.table_offset = table_offset
        self.table_clusters = table_clusters
        self._set_table_in_header = set_table
        self._barrier = barrier
        raw = f.pread(table_offset, table_clusters * self.cs, "refcount table")
        self.table = _be_u64_array(raw)
        self._blocks: OrderedDict[int, array.array] = OrderedDict()
        self._dirty: dict[int, array.array] = {}
        self.free_hint = 0
        self.reserved: list[int] = []  # cluster indices with refcount 1, not yet used
        self.pending_free: list[tuple[int, int]] = []  # (byte offset, length)
        self.floor = 0  # allocations never go below this cluster index (repair)

    # -- lookup -------------------------------------------------------------

    def _block_offset(self, bidx: int) -> int:
        if bidx >= len(self.table):
            return 0
        off = self.table[bidx] & ~(self.cs - 1) & ((1 << 56) - 1)
        if self.table[bidx] and off != self.table[bidx]:
            raise ImageError(f"{self.f.name}: refcount table entry {bidx} is misaligned")
        return off

    def _load(self, bidx: int) -> array.array | None:
        blk = self._blocks.get(bidx)
        if blk is not None:
            self._blocks.move_to_end(bidx)
            return blk
        blk = self._dirty.get(bidx)  # evicted but not yet written: the newest copy
        if blk is not None:
            self._blocks[bidx] = blk
            return blk
        off = self._block_offset(bidx)
        if not off:
            return None
        blk = self._decode(self.f.pread(off, self.cs, "refcount block"))
        self._blocks[bidx] = blk
        if len(self._blocks) > BLOCK_CACHE:
            self._blocks.popitem(last=False)
        return blk

    def _decode(self, raw: bytes) -> array.array:
        if self.order >= 3:
            a = array.array(_TYPECODES[self.order], raw)
            if sys.byteorder == "little" and self.order > 3:
                a.byteswap()
            return a
        per_byte = 8 >> self.order
        mask = (1 << self.bits) - 1
        out = array.array("B", bytes(len(raw) * per_byte))
        for i, byte in enumerate(raw):
            if byte:
                for j in range(per_byte):
                    out[i * per_byte + j] = (byte >> (j * self.bits)) & mask
        return out

    def forget(self, bidx: int) -> None:
        """Drop a cached block (its table entry was rewritten by repair)."""
        self._blocks.pop(bidx, None)
        self._dirty.pop(bidx, None)

    def get(self, cluster: int) -> int:
        """Refcount of host cluster ``cluster`` (0 where no block covers it)."""
        blk = self._load(cluster // self.per_block)
        return 0 if blk is None else blk[cluster % self.per_block]

    # -- update -------------------------------------------------------------

    def update(self, cluster: int, delta: int, write: bool = True) -> None:
        """Add ``delta`` to a cluster's refcount and write the entry through.

        ``write=False`` only marks the block dirty; ``write_dirty`` then writes
        each such block whole (one pwrite instead of one per entry).
        """
        bidx, idx = divmod(cluster, self.per_block)
        blk = self._load(bidx)
        if blk is None:
            if delta < 0:
                raise RefcountError(f"{self.f.name}: freeing cluster {cluster} with refcount 0")
            blk = self._new_block(bidx, avoid=cluster)
        value = blk[idx] + delta
        if value < 0:
            raise RefcountError(
                f"{self.f.name}: refcount of cluster {cluster} would drop below zero; "
                "run 'kvmlite img check -r all'"
            )
        if value > self.max:
            raise RefcountError(
                f"{self.f.name}: refcount of cluster {cluster} would exceed {self.max} "
                f"(refcount_bits={self.bits}); convert the image with wider refcounts"
            )
        blk[idx] = value
        if write:
            self._write_entry(bidx, idx, blk)
        else:
            self._dirty[bidx] = blk
        if value == 0 and cluster < self.free_hint:
            self.free_hint = cluster

    def _write_entry(self, bidx: int, idx: int, blk: array.array) -> None:
        base = self._block_offset(bidx)
        if self.order >= 3:
            width = self.bits // 8
            raw = blk[idx].to_bytes(width, "big")
            self.f.pwrite(base + idx * width, raw)
            return
        per_byte = 8 >> self.order
        first = idx - idx % per_byte
        byte = 0
        for j in range(per_byte):
            byte |= blk[first + j] << (j * self.bits)
        self.f.pwrite(base + first // per_byte, bytes([byte]))

    def _encode(self, blk: array.array) -> bytes:
        if self.order >= 3:
            a = array.array(blk.typecode, blk)
            if sys.byteorder == "little" and self.order > 3:
                a.byteswap()
            return a.tobytes()
        per_byte = 8 >> self.order
        out = bytearray(len(blk) // per_byte)
        for i in range(len(out)):
            byte = 0
            for j in range(per_byte):
                byte |= blk[i * per_byte + j] << (j * self.bits)
            out[i] = byte
        return bytes(out)

    def _empty_block(self) -> array.array:
        code = _TYPECODES.get(self.order, "B")
        return array.array(code, bytes(self.per_block * array.array(code).itemsize))

    def _new_block(self, bidx: int, avoid: int = -1) -> array.array:
        """Create the refcount block ``bidx``; it is self-describing when it covers itself."""
        if bidx >= len(self.table):
            self._grow_table(bidx, avoid)
            blk = self._load(bidx)
            if blk is not None:  # the grown area's own blocks may include this one
                return blk
        loc = self._find_free(1, for_block=bidx, avoid=avoid)
        blk = self._empty_block()
        if loc // self.per_block == bidx:
            blk[loc % self.per_block] = 1
        else:
            self.update(loc, 1)  # the block's own cluster is counted in another block
        self.f.pwrite(loc * self.cs, self._encode(blk))
        self._barrier()
        self.table[bidx] = loc * self.cs
        self.f.pwrite(self.table_offset + bidx * 8, struct.pack(">Q", loc * self.cs))
        self._blocks[bidx] = blk
        return blk

    def _grow_table(self, bidx: int, avoid: int = -1) -> None:
        """Move the refcount table to a bigger area at the end of the file.

        The new area holds the new table and the refcount blocks that describe
        the area itself; both are written and synced before the header points
        at the new table, and the old table is freed only after that.
        """
        old_off, old_clusters = self.table_offset, self.table_clusters
        start = max(self.f.length + self.cs - 1, 0) // self.cs
        start = max(start, self.free_hint, self.floor, self._max_covered())
        if self.reserved:
            start = max(start, max(self.reserved) + 1)
        # ``avoid`` is the cluster whose refcount is being raised right now.
        start = max(start, avoid + 1)
        # The new area must lie in blocks that do not exist yet, so that the
        # blocks created here describe all of it.
        while start // self.per_block < len(self.table) and self.table[start // self.per_block]:
            start = (start // self.per_block + 1) * self.per_block
        want_entries = max(bidx + 1, len(self.table) * 2)
        while True:
            tclusters = -(-want_entries * 8 // self.cs)
            # blocks covering [start, start + tclusters + nblocks)
            nblocks = 1
            while True:
                end = start + tclusters + nblocks
                first_b, last_b = start // self.per_block, (end - 1) // self.per_block
                if last_b - first_b + 1 <= nblocks:
                    break
                nblocks += 1
            if max(last_b, bidx) < tclusters * self.cs // 8:
                break
            want_entries = max(want_entries, last_b + 1) * 2
        if tclusters * self.cs > (8 << 20):
            raise ImageError(f"{self.f.name}: refcount table would exceed 8 MiB; image too big")
        new_table = array.array("Q", self.table) + array.array(
            "Q", bytes(8 * (tclusters * self.cs // 8 - len(self.table)))
        )
        area_end = start + tclusters + nblocks
        blocks: dict[int, array.array] = {}
        for i in range(nblocks):
            b = first_b + i
            if new_table[b]:
                raise ImageError(f"{self.f.name}: refcount table growth hit an existing block")
            new_table[b] = (start + tclusters + i) * self.cs
            blocks[b] = self._empty_block()
        for c in range(start, area_end):
            blocks[c // self.per_block][c % self.per_block] = 1
        for b, blk in blocks.items():
            self.f.pwrite(new_table[b], self._encode(blk))
        raw = array.array("Q", new_table)
        if sys.byteorder == "little":
            raw.byteswap()
        self.f.pwrite(start * self.cs, raw.tobytes())
        self._barrier()
        self.table = new_table
        self.table_offset, self.table_clusters = start * self.cs, tclusters
        self._set_table_in_header(self.table_offset, tclusters)
        self._barrier()
        for b, blk in blocks.items():
            self._blocks[b] = blk
        self.free(old_off, old_clusters * self.cs)

    def _max_covered(self) -> int:
        """First cluster index past every refcount block referenced by the table."""
        top = 0
        for e in self.table:
            if e:
                top = max(top, (e // self.cs) + 1)
        return top

    # -- allocation ---------------------------------------------------------

    def _find_free(self, n: int, for_block: int | None = None, avoid: int = -1) -> int:
        """First run of ``n`` clusters with refcount 0 at or after the hint."""
        c = max(self.free_hint, self.floor)
        run = 0
        while True:
            bidx = c // self.per_block
            blk = None if bidx == for_block else self._load(bidx)
            if c != avoid and (blk is None or blk[c % self.per_block] == 0):
                run += 1
                if run == n:
                    return c - n + 1
            else:
                run = 0
            c += 1

    def alloc(self, n: int = 1) -> int:
        """Allocate ``n`` contiguous clusters (refcount 1, stable); return the byte offset."""
        if n == 1:
            if self.reserved:
                return self.reserved.pop() * self.cs
            return self._reserve_batch() * self.cs
        while True:
            first = self._find_free(n)
            # Create missing refcount blocks first so none lands inside the run.
            for b in range(first // self.per_block, (first + n - 1) // self.per_block + 1):
                if self._load(b) is None:
                    self._new_block(b)
            if all(self.get(c) == 0 for c in range(first, first + n)):
                break
        for c in range(first, first + n):
            self.update(c, 1)
        self._barrier()
        self.free_hint = first + n
        return first * self.cs

    def _reserve_batch(self) -> int:
        """Take a batch of free clusters with one barrier; return the first, keep the rest."""
        # Small clusters have small refcount blocks; a batch of at most half a
        # block keeps the blocks created on the way from spreading far ahead.
        count = max(1, min(RESERVE_BYTES // self.cs, self.per_block // 2))
        first = self._find_free(1)
        got: list[int] = []
        for c in range(first, first + count):
            # A refcount block created on the way may have taken a cluster of the run.
            if self.get(c) == 0:
                self.update(c, 1, write=False)
                got.append(c)
        self.write_dirty()
        self._barrier()
        self.free_hint = first + count
        got.reverse()
        self.reserved.extend(got[:-1])
        return got[-1]

    def write_dirty(self) -> None:
        """Write the blocks changed with ``update(write=False)``."""
        dirty, self._dirty = self._dirty, {}
        for bidx, blk in dirty.items():
            self.f.pwrite(self._block_offset(bidx), self._encode(blk))

    def release_reserved(self) -> None:
        """Give back reserved but unused clusters (clean close)."""
        while self.reserved:
            self.update(self.reserved.pop(), -1)

    def trim_tail(self) -> None:
        """Cut unused clusters off the end of the file (after release_reserved)."""
        end = -(-self.f.length // self.cs)
        c = end
        try:
            while c > 1 and end - c < 4 * self.per_block and self.get(c - 1) == 0:
                c -= 1
        except ImageError:
            return  # damaged refcounts: only an optimisation is lost
        if c < end:
            os.ftruncate(self.f.fd, c * self.cs)
            self.f.length = c * self.cs

    def free(self, offset: int, length: int) -> None:
        """Queue the clusters touching ``[offset, offset+length)`` to lose one reference.

        Callers have already cleared every pointer to them; the drop itself is
        applied after the next sync (``apply_frees``).
        """
        self.pending_free.append((offset, length))

    def apply_frees(self) -> None:
        pending, self.pending_free = self.pending_free, []
        for offset, length in pending:
            first = offset >> self.cluster_bits
            last = (offset + length - 1) >> self.cluster_bits
            for c in range(first, last + 1):
                self.update(c, -1)


def _be_u64_array(raw: bytes) -> array.array:
    a = array.array("Q", raw)
    if sys.byteorder == "little":
        a.byteswap()
    return a

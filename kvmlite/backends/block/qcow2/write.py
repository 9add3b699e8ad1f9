"""Writing to a qcow2 image: in-place writes, copy-on-write allocation, zeroing,
discard, compressed clusters, resize (qcow2.txt, "Cluster mapping").

Ordering rules (the theory of operation is in refcount.py and docs/qcow2.md):

1. a cluster's refcount is raised (and, unless lazy, synced) before any
   table points at it (``Refcounts.alloc`` hands out pre-synced clusters);
2. a new cluster's data, or a new L2 table's contents, is written before the
   L2/L1 entry that points at it; when the data was copied from elsewhere
   (backing file, compressed or shared cluster) a barrier separates the two,
   so a power loss cannot expose a half-copied cluster;
3. an old cluster loses its reference in the tables first; its refcount drops
   only after the next sync (``Refcounts.free``/``apply_frees``).

A process killed between any two writes therefore leaves only leaked clusters.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kvmlite.backends.block.iovec import IoVec
from kvmlite.backends.block.qcow2 import header as hdr
from kvmlite.backends.block.qcow2.compress import compress
from kvmlite.backends.block.qcow2.tables import (
    COMPRESSED,
    NORMAL,
    OFFSET_MASK,
    OFLAG_COPIED,
    OFLAG_ZERO,
    UNALLOCATED,
    ZERO_ALLOC,
    ZERO_PLAIN,
    to_be,
)
from kvmlite.errors import ImageError

if TYPE_CHECKING:
    from kvmlite.backends.block.qcow2.image import Qcow2Backend

MAX_PENDING_FREES = 4096


class Qcow2Writer:
    """The write side of one ``Qcow2Backend`` (composition: the image owns one
    and forwards its public write calls; this keeps the files small and the
    write path's state, the image's tables and caches, in one object)."""

    def __init__(self, img: Qcow2Backend) -> None:
        self.img = img

    def writev(self, offset: int, bufs: Sequence[bytes | memoryview]) -> int:
        self.img._check_writable()
        iov = IoVec(bufs)
        self.img._check_range(offset, iov.total)
        deferred: list[tuple[int, list[memoryview]]] = []
        with self.img._lock:
            self._mark_dirty()
            self._write_locked(offset, iov, deferred)
            self._maybe_apply_frees()
            if deferred:
                self.img._inflight += 1
        if deferred:
            self.img._data_io(deferred, write=True)
        return iov.total

    def _write_locked(
        self,
        offset: int,
        iov: IoVec,
        deferred: list[tuple[int, list[memoryview]]] | None = None,
    ) -> None:
        """Write under the lock; in-place runs go to ``deferred`` when given."""
        cs = self.img.cs
        pos = 0
        run_host = run_pos = run_len = 0

        def flush_run() -> None:
            views = iov.slice(run_pos, run_len)
            if deferred is not None:
                deferred.append((run_host, views))
            else:
                self.img.f.pwritev(run_host, views)

        while pos < iov.total:
            vc, inoff = divmod(offset + pos, cs)
            n = min(cs - inoff, iov.total - pos)
            entry = self.img._entry(vc)
            kind, host = self.img.codec.classify(entry)
            if kind == NORMAL and entry & OFLAG_COPIED:
                self._check_data_target(host)
                if run_len and run_host + run_len == host + inoff:
                    run_len += n
                else:
                    if run_len:
                        flush_run()
                    run_host, run_pos, run_len = host + inoff, pos, n
            else:
                if run_len:
                    flush_run()
                    run_len = 0
                self._cow_write(vc, inoff, iov.slice(pos, n), entry)
            pos += n
        if run_len:
            flush_run()

    def _check_data_target(self, host: int) -> None:
        """Refuse an in-place write that would land on metadata or outside the file."""
        cs = self.img.cs
        h = self.img.header
        bad = host % cs or host == 0 or host + cs > self.img.f.length
        for start, length in (  # the fixed metadata an L2 entry must never alias
            (self.img.l1_offset, len(self.img.l1) * 8),
            (h.refcount_table_offset, h.refcount_table_clusters * cs),
            (h.snapshots_offset, self.img.snapshot_table_size),
        ):
            if length and start < host + cs and host < start + length:
                bad = True
        if bad:
            raise ImageError(
                f"{self.img.filename}: an L2 entry points at host offset {host}, which is metadata "
                "or outside the file; the image is damaged (run 'kvmlite img check')"
            )

    def _cow_write(self, vc: int, inoff: int, src: list[memoryview], entry: int) -> None:
        """Write into a cluster that cannot be written in place: allocate a new one."""
        cs = self.img.cs
        n = sum(v.nbytes for v in src)
        kind, old = self.img.codec.classify(entry)
        copied = False
        l2off, l2i = self._l2_for_write(vc)
        new = self.img.refcounts.alloc()
        fresh = new >= self.img.f.length  # past EOF: the file reads as zeros there
        if inoff == 0 and n == cs:
            data: list[memoryview] = src
        elif fresh and not self._has_old_content(kind):
            # Nothing to copy and nothing stale to hide: write only the new bytes
            # and extend the file over the rest of the cluster.
            self.img.f.pwritev(new + inoff, src)
            self.img.f.extend(new + cs)
            self.img.l2.set(l2off, l2i, new | OFLAG_COPIED)
            self._free_entry(kind, old, entry)
            return
        else:
            buf = bytearray(cs)
            base = vc * cs
            valid = min(cs, self.img.size - base)
            if self._has_old_content(kind):
                self.img._read_into(base, IoVec([memoryview(buf)]), 0, valid)
                copied = True
            pos = inoff
            for v in src:
                buf[pos : pos + v.nbytes] = v
                pos += v.nbytes
            data = [memoryview(buf)]
        self.img.f.pwritev(new, data)
        if copied:
            self.img._barrier()
        self.img.l2.set(l2off, l2i, new | OFLAG_COPIED)
        self._free_entry(kind, old, entry)

    def _has_old_content(self, kind: int) -> bool:
        return kind in (NORMAL, COMPRESSED) or (
            kind == UNALLOCATED and self.img.backing is not None
        )

    def _free_entry(self, kind: int, host: int, entry: int) -> None:
        if kind in (NORMAL, ZERO_ALLOC):
            self.img.refcounts.free(host, self.img.cs)
        elif kind == COMPRESSED:
            _off, start, span = self.img.codec.compressed_range(entry)
            self.img.refcounts.free(start, span)

    def _l2_for_write(self, vc: int) -> tuple[int, int]:
        """The L2 table (host offset) for ``vc``, allocated or unshared as needed."""
        l1i, l2i = divmod(vc, self.img.l2_entries)
        e = self.img.l1[l1i]
        off = e & OFFSET_MASK
        if off and e & OFLAG_COPIED:
            return off, l2i
        if off:
            table = array.array("Q", self.img.l2.get(off))
        else:
            table = array.array("Q", bytes(self.img.cs))
        new = self.img.refcounts.alloc()
        self.img.l2.create(new, table)
        self.img._barrier()
        self.set_l1(l1i, new | OFLAG_COPIED)
        if off:
            self.img.l2.drop(off)
            self.img.refcounts.free(off, self.img.cs)
        return new, l2i

    def set_l1(self, i: int, value: int) -> None:
        self.img.l1[i] = value
        self.img.f.pwrite(self.img.l1_offset + i * 8, value.to_bytes(8, "big"))

    # -- zeroing --------------------------------------------------------------

    def discard(self, offset: int, length: int) -> None:
        """Free whole clusters (they then read as zeros); partial clusters are left
        alone, as QEMU does: a discard is a hint, not a promise of zeros."""
        self.img._check_writable()
        self.img._check_range(offset, length)
        cs = self.img.cs
        start = -(-offset // cs) * cs
        end = offset + length
        if end != self.img.size:
            end = end // cs * cs
        if end > start:
            self.write_zeroes(start, end - start, unmap=True)

    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None:
        self.img._check_writable()
        self.img._check_range(offset, length)
        with self.img._lock:
            self._mark_dirty()
            self._zero_range(offset, length, deallocate=False)
            self._maybe_apply_frees()

    def deallocate(self, offset: int, length: int) -> None:
        """Drop this layer's clusters so the range reads from the backing file again.

        Partial clusters at either end are left alone (used by commit and resize).
        """
        self.img._check_writable()
        self.img._check_range(offset, length)
        with self.img._lock:
            self._mark_dirty()
            self._zero_range(offset, length, deallocate=True)
            self._maybe_apply_frees()

    def _zero_range(self, offset: int, length: int, deallocate: bool) -> None:
        cs = self.img.cs
        end = offset + length
        pos = offset
        while pos < end:
            vc, inoff = divmod(pos, cs)
            cend = min((vc + 1) * cs, self.img.size)
            n = min(cend, end) - pos
            if inoff == 0 and pos + n == cend:
                self._zero_cluster(vc, deallocate)
            elif not deallocate and not self._reads_zero(vc):
                self._write_locked(pos, IoVec([bytes(n)]))
            pos += n

    def _reads_zero(self, vc: int) -> bool:
        kind, _ = self.img.codec.classify(self.img._entry(vc))
        if kind in (ZERO_PLAIN, ZERO_ALLOC):
            return True
        return kind == UNALLOCATED and (
            self.img.backing is None or vc * self.img.cs >= self.img.backing.size
        )

    def _zero_cluster(self, vc: int, deallocate: bool) -> None:
        entry = self.img._entry(vc)
        kind, host = self.img.codec.classify(entry)
        has_backing = self.img.backing is not None and vc * self.img.cs < self.img.backing.size
        if deallocate:
            new = 0
            if kind == UNALLOCATED:
                return
        else:
            if kind == ZERO_PLAIN or (kind == UNALLOCATED and not has_backing):
                return
            if self.img.header.version >= 3:
                new = OFLAG_ZERO
            elif not has_backing:
                new = 0
            else:  # version 2 cannot say "zero" over a backing file: store zeros
                self._cow_write(vc, 0, [memoryview(bytes(self.img.cs))], entry)
                return
        l2off, l2i = self._l2_for_write(vc)
        self.img.l2.set(l2off, l2i, new)
        self._free_entry(kind, host, entry)

    # -- compressed clusters (convert -c) -------------------------------------

    def write_compressed(self, offset: int, data: bytes) -> None:
        """Store one whole cluster compressed (falls back to plain if it does not shrink)."""
        self.img._check_writable()
        cs = self.img.cs
        if offset % cs or len(data) != min(cs, self.img.size - offset):
            raise ValueError("write_compressed takes exactly one aligned cluster")
        packed = compress(bytes(data) + bytes(cs - len(data)), self.img.header.compression_type)
        with self.img._lock:
            self._mark_dirty()
            if len(packed) >= cs:  # as QEMU: store it plain if it does not shrink
                self._write_locked(offset, IoVec([data]))
                return
            host = self._alloc_bytes(len(packed))
            self.img.f.pwrite(host, packed)
            vc = offset // cs
            entry = self.img._entry(vc)
            kind, old = self.img.codec.classify(entry)
            l2off, l2i = self._l2_for_write(vc)
            self.img.l2.set(l2off, l2i, self.img.codec.compressed_entry(host, len(packed)))
            self._free_entry(kind, old, entry)

    def _alloc_bytes(self, n: int) -> int:
        cs = self.img.cs
        off = self.img._cbytes_off
        if off % cs and off % cs + n <= cs:
            self.img.refcounts.update(off // cs, 1)
            self.img._cbytes_off += n
            return off
        clusters = -(-n // cs)
        first = self.img.refcounts.alloc(clusters) if clusters > 1 else self.img.refcounts.alloc()
        self.img._cbytes_off = first + n
        return first

    # -- size -----------------------------------------------------------------

    def resize(self, new_size: int) -> None:
        """Grow or shrink the virtual disk (the L1 table moves when it must grow)."""
        self.img._check_writable()
        if new_size < 0 or new_size > hdr.MAX_VIRTUAL_SIZE:
            raise ImageError(
                f"{self.img.filename}: cannot resize to {new_size} bytes: a qcow2 image holds"
                f" 0 to {hdr.MAX_VIRTUAL_SIZE} bytes"
            )
        if self.img.snapshots:
            raise ImageError(f"{self.img.filename}: cannot resize an image that has snapshots")
        with self.img._lock:
            self._mark_dirty()
            cs = self.img.cs
            if new_size < self.img.size:
                start = -(-new_size // cs) * cs
                if start < self.img.size:
                    self._zero_range(start, self.img.size - start, deallocate=True)
            needed = -(-new_size // (cs * self.img.l2_entries))
            if needed > len(self.img.l1):
                self._grow_l1(needed)
            self.img.size = self.img.header.size = new_size
            self.img._write_header()
            self.img._apply_frees()

    def _grow_l1(self, entries: int) -> None:
        if entries * 8 > hdr.MAX_L1_BYTES:
            raise ImageError("the new size needs an L1 table over 32 MiB; pick a smaller size")
        cs = self.img.cs
        table = array.array("Q", self.img.l1) + array.array(
            "Q", bytes(8 * (entries - len(self.img.l1)))
        )
        nclusters = -(-entries * 8 // cs)
        new = self.img.refcounts.alloc(nclusters)
        self.img.f.pwrite(new, to_be(table) + bytes(nclusters * cs - entries * 8))
        self.img._barrier()
        old_off, old_len = self.img.l1_offset, len(self.img.l1) * 8
        self.img.header.l1_table_offset, self.img.header.l1_size = new, entries
        self.img.header.size = self.img.size
        self.img._write_header()
        self.img._barrier()
        self.img.l1, self.img.l1_offset = table, new
        self.img.refcounts.free(old_off, old_len)

    # -- sync / dirty / close -------------------------------------------------

    def _mark_dirty(self) -> None:
        """Lazy refcounts: set the dirty bit (synced) before the first change."""
        if self.img.lazy and not self.img._dirty_marked:
            self.img.header.incompatible_features |= hdr.INCOMPAT_DIRTY
            self.img._write_header()
            self.img.f.sync()
            self.img._dirty_marked = True

    def _maybe_apply_frees(self) -> None:
        if len(self.img.refcounts.pending_free) > MAX_PENDING_FREES:
            self.img._apply_frees()

    def flush(self) -> None:
        if self.img.read_only:
            return
        with self.img._lock:
            self.img._apply_frees()

    def close(self) -> None:
        self.img._apply_frees()
        self.img.refcounts.release_reserved()
        self.img.refcounts.trim_tail()
        self.img.f.sync()
        if self.img._dirty_marked:
            self.img.header.incompatible_features &= ~hdr.INCOMPAT_DIRTY
            self.img._write_header()
            self.img.f.sync()

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
    """Write-side methods of Qcow2Backend (kept apart to keep files small)."""

    def writev(self: Qcow2Backend, offset: int, bufs: Sequence[bytes | memoryview]) -> int:
        self._check_writable()
        iov = IoVec(bufs)
        self._check_range(offset, iov.total)
        deferred: list[tuple[int, list[memoryview]]] = []
        with self._lock:
            self._mark_dirty()
            self._write_locked(offset, iov, deferred)
            self._maybe_apply_frees()
            if deferred:
                self._inflight += 1
        if deferred:
            self._data_io(deferred, write=True)
        return iov.total

    def _write_locked(
        self: Qcow2Backend,
        offset: int,
        iov: IoVec,
        deferred: list[tuple[int, list[memoryview]]] | None = None,
    ) -> None:
        """Write under the lock; in-place runs go to ``deferred`` when given."""
        cs = self.cs
        pos = 0
        run_host = run_pos = run_len = 0

        def flush_run() -> None:
            views = iov.slice(run_pos, run_len)
            if deferred is not None:
                deferred.append((run_host, views))
            else:
                self.f.pwritev(run_host, views)

        while pos < iov.total:
            vc, inoff = divmod(offset + pos, cs)
            n = min(cs - inoff, iov.total - pos)
            entry = self._entry(vc)
            kind, host = self.codec.classify(entry)
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

    def _check_data_target(self: Qcow2Backend, host: int) -> None:
        """Refuse an in-place write that would land on metadata or outside the file."""
        cs = self.cs
        h = self.header
        bad = host % cs or host == 0 or host + cs > self.f.length
        for start, length in (  # the fixed metadata an L2 entry must never alias
            (self.l1_offset, len(self.l1) * 8),
            (h.refcount_table_offset, h.refcount_table_clusters * cs),
            (h.snapshots_offset, self.snapshot_table_size),
        ):
            if length and start < host + cs and host < start + length:
                bad = True
        if bad:
            raise ImageError(
                f"{self.filename}: an L2 entry points at host offset {host}, which is metadata "
                "or outside the file; the image is damaged (run 'kvmlite img check')"
            )

    def _cow_write(
        self: Qcow2Backend, vc: int, inoff: int, src: list[memoryview], entry: int
    ) -> None:
        """Write into a cluster that cannot be written in place: allocate a new one."""
        cs = self.cs
        n = sum(v.nbytes for v in src)
        kind, old = self.codec.classify(entry)
        copied = False
        l2off, l2i = self._l2_for_write(vc)
        new = self.refcounts.alloc()
        fresh = new >= self.f.length  # past EOF: the file reads as zeros there
        if inoff == 0 and n == cs:
            data: list[memoryview] = src
        elif fresh and not self._has_old_content(kind):
            # Nothing to copy and nothing stale to hide: write only the new bytes
            # and extend the file over the rest of the cluster.
            self.f.pwritev(new + inoff, src)
            self.f.extend(new + cs)
            self.l2.set(l2off, l2i, new | OFLAG_COPIED)
            self._free_entry(kind, old, entry)
            return
        else:
            buf = bytearray(cs)
            base = vc * cs
            valid = min(cs, self.size - base)
            if self._has_old_content(kind):
                self._read_into(base, IoVec([memoryview(buf)]), 0, valid)
                copied = True
            pos = inoff
            for v in src:
                buf[pos : pos + v.nbytes] = v
                pos += v.nbytes
            data = [memoryview(buf)]
        self.f.pwritev(new, data)
        if copied:
            self._barrier()
        self.l2.set(l2off, l2i, new | OFLAG_COPIED)
        self._free_entry(kind, old, entry)

    def _has_old_content(self: Qcow2Backend, kind: int) -> bool:
        return kind in (NORMAL, COMPRESSED) or (kind == UNALLOCATED and self.backing is not None)

    def _free_entry(self: Qcow2Backend, kind: int, host: int, entry: int) -> None:
        if kind in (NORMAL, ZERO_ALLOC):
            self.refcounts.free(host, self.cs)
        elif kind == COMPRESSED:
            _off, start, span = self.codec.compressed_range(entry)
            self.refcounts.free(start, span)

    def _l2_for_write(self: Qcow2Backend, vc: int) -> tuple[int, int]:
        """The L2 table (host offset) for ``vc``, allocated or unshared as needed."""
        l1i, l2i = divmod(vc, self.l2_entries)
        e = self.l1[l1i]
        off = e & OFFSET_MASK
        if off and e & OFLAG_COPIED:
            return off, l2i
        if off:
            table = array.array("Q", self.l2.get(off))
        else:
            table = array.array("Q", bytes(self.cs))
        new = self.refcounts.alloc()
        self.l2.create(new, table)
        self._barrier()
        self._set_l1(l1i, new | OFLAG_COPIED)
        if off:
            self.l2.drop(off)
            self.refcounts.free(off, self.cs)
        return new, l2i

    def _set_l1(self: Qcow2Backend, i: int, value: int) -> None:
        self.l1[i] = value
        self.f.pwrite(self.l1_offset + i * 8, value.to_bytes(8, "big"))

    # -- zeroing --------------------------------------------------------------

    def discard(self: Qcow2Backend, offset: int, length: int) -> None:
        """Free whole clusters (they then read as zeros); partial clusters are left
        alone, as QEMU does: a discard is a hint, not a promise of zeros."""
        self._check_writable()
        self._check_range(offset, length)
        cs = self.cs
        start = -(-offset // cs) * cs
        end = offset + length
        if end != self.size:
            end = end // cs * cs
        if end > start:
            self.write_zeroes(start, end - start, unmap=True)

    def write_zeroes(self: Qcow2Backend, offset: int, length: int, unmap: bool = False) -> None:
        self._check_writable()
        self._check_range(offset, length)
        with self._lock:
            self._mark_dirty()
            self._zero_range(offset, length, deallocate=False)
            self._maybe_apply_frees()

    def deallocate(self: Qcow2Backend, offset: int, length: int) -> None:
        """Drop this layer's clusters so the range reads from the backing file again.

        Partial clusters at either end are left alone (used by commit and resize).
        """
        self._check_writable()
        self._check_range(offset, length)
        with self._lock:
            self._mark_dirty()
            self._zero_range(offset, length, deallocate=True)
            self._maybe_apply_frees()

    def _zero_range(self: Qcow2Backend, offset: int, length: int, deallocate: bool) -> None:
        cs = self.cs
        end = offset + length
        pos = offset
        while pos < end:
            vc, inoff = divmod(pos, cs)
            cend = min((vc + 1) * cs, self.size)
            n = min(cend, end) - pos
            if inoff == 0 and pos + n == cend:
                self._zero_cluster(vc, deallocate)
            elif not deallocate and not self._reads_zero(vc):
                self._write_locked(pos, IoVec([bytes(n)]))
            pos += n

    def _reads_zero(self: Qcow2Backend, vc: int) -> bool:
        kind, _ = self.codec.classify(self._entry(vc))
        if kind in (ZERO_PLAIN, ZERO_ALLOC):
            return True
        return kind == UNALLOCATED and (self.backing is None or vc * self.cs >= self.backing.size)

    def _zero_cluster(self: Qcow2Backend, vc: int, deallocate: bool) -> None:
        entry = self._entry(vc)
        kind, host = self.codec.classify(entry)
        has_backing = self.backing is not None and vc * self.cs < self.backing.size
        if deallocate:
            new = 0
            if kind == UNALLOCATED:
                return
        else:
            if kind == ZERO_PLAIN or (kind == UNALLOCATED and not has_backing):
                return
            if self.header.version >= 3:
                new = OFLAG_ZERO
            elif not has_backing:
                new = 0
            else:  # version 2 cannot say "zero" over a backing file: store zeros
                self._cow_write(vc, 0, [memoryview(bytes(self.cs))], entry)
                return
        l2off, l2i = self._l2_for_write(vc)
        self.l2.set(l2off, l2i, new)
        self._free_entry(kind, host, entry)

    # -- compressed clusters (convert -c) -------------------------------------

    def write_compressed(self: Qcow2Backend, offset: int, data: bytes) -> None:
        """Store one whole cluster compressed (falls back to plain if it does not shrink)."""
        self._check_writable()
        cs = self.cs
        if offset % cs or len(data) != min(cs, self.size - offset):
            raise ValueError("write_compressed takes exactly one aligned cluster")
        packed = compress(bytes(data) + bytes(cs - len(data)), self.header.compression_type)
        with self._lock:
            self._mark_dirty()
            if len(packed) >= cs:  # as QEMU: store it plain if it does not shrink
                self._write_locked(offset, IoVec([data]))
                return
            host = self._alloc_bytes(len(packed))
            self.f.pwrite(host, packed)
            vc = offset // cs
            entry = self._entry(vc)
            kind, old = self.codec.classify(entry)
            l2off, l2i = self._l2_for_write(vc)
            self.l2.set(l2off, l2i, self.codec.compressed_entry(host, len(packed)))
            self._free_entry(kind, old, entry)

    def _alloc_bytes(self: Qcow2Backend, n: int) -> int:
        cs = self.cs
        off = self._cbytes_off
        if off % cs and off % cs + n <= cs:
            self.refcounts.update(off // cs, 1)
            self._cbytes_off += n
            return off
        clusters = -(-n // cs)
        first = self.refcounts.alloc(clusters) if clusters > 1 else self.refcounts.alloc()
        self._cbytes_off = first + n
        return first

    # -- size -----------------------------------------------------------------

    def resize(self: Qcow2Backend, new_size: int) -> None:
        """Grow or shrink the virtual disk (the L1 table moves when it must grow)."""
        self._check_writable()
        if new_size < 0 or new_size > hdr.MAX_VIRTUAL_SIZE:
            raise ImageError(f"invalid size {new_size}")
        if self.snapshots:
            raise ImageError(f"{self.filename}: cannot resize an image that has snapshots")
        with self._lock:
            self._mark_dirty()
            cs = self.cs
            if new_size < self.size:
                start = -(-new_size // cs) * cs
                if start < self.size:
                    self._zero_range(start, self.size - start, deallocate=True)
            needed = -(-new_size // (cs * self.l2_entries))
            if needed > len(self.l1):
                self._grow_l1(needed)
            self.size = self.header.size = new_size
            self._write_header()
            self._apply_frees()

    def _grow_l1(self: Qcow2Backend, entries: int) -> None:
        if entries * 8 > hdr.MAX_L1_BYTES:
            raise ImageError("the new size needs an L1 table over 32 MiB; pick a smaller size")
        cs = self.cs
        table = array.array("Q", self.l1) + array.array("Q", bytes(8 * (entries - len(self.l1))))
        nclusters = -(-entries * 8 // cs)
        new = self.refcounts.alloc(nclusters)
        self.f.pwrite(new, to_be(table) + bytes(nclusters * cs - entries * 8))
        self._barrier()
        old_off, old_len = self.l1_offset, len(self.l1) * 8
        self.header.l1_table_offset, self.header.l1_size = new, entries
        self.header.size = self.size
        self._write_header()
        self._barrier()
        self.l1, self.l1_offset = table, new
        self.refcounts.free(old_off, old_len)

    # -- sync / dirty / close -------------------------------------------------

    def _mark_dirty(self: Qcow2Backend) -> None:
        """Lazy refcounts: set the dirty bit (synced) before the first change."""
        if self.lazy and not self._dirty_marked:
            self.header.incompatible_features |= hdr.INCOMPAT_DIRTY
            self._write_header()
            self.f.sync()
            self._dirty_marked = True

    def _maybe_apply_frees(self: Qcow2Backend) -> None:
        if len(self.refcounts.pending_free) > MAX_PENDING_FREES:
            self._apply_frees()

    def flush(self: Qcow2Backend) -> None:
        if self.read_only:
            return
        with self._lock:
            self._apply_frees()

    def _close_writer(self: Qcow2Backend) -> None:
        self._apply_frees()
        self.refcounts.release_reserved()
        self.refcounts.trim_tail()
        self.f.sync()
        if self._dirty_marked:
            self.header.incompatible_features &= ~hdr.INCOMPAT_DIRTY
            self._write_header()
            self.f.sync()

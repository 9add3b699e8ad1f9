"""The qcow2 block backend: opening an image and mapping guest offsets (qcow2.txt).

Reads and allocation-free lookups live here; allocating writes, zeroing and
compression live in ``write.py`` (a mixin), the refcount machinery in
``refcount.py``. One lock guards the metadata; the data transfers of plain
clusters run outside it (``_data_io``), which is safe because freed clusters
return to the allocator only after in-flight requests drain (``_apply_frees``).

Opening validates the header (``header.py``) and loads the L1 table; the
backing chain is opened read-only, with loops and excessive depth refused.
A read-write open of an image whose dirty bit is set (lazy refcounts after a
crash) first rebuilds the refcounts, as QEMU does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence

from kvmlite.backends.block.base import BlockBackend, Extent
from kvmlite.backends.block.iovec import IoVec, copy_into, fill_zero
from kvmlite.backends.block.qcow2 import header as hdr
from kvmlite.backends.block.qcow2.compress import decompress
from kvmlite.backends.block.qcow2.hostfile import HostFile
from kvmlite.backends.block.qcow2.refcount import Refcounts
from kvmlite.backends.block.qcow2.snapshot import Snapshot, read_snapshots
from kvmlite.backends.block.qcow2.tables import (
    COMPRESSED,
    NORMAL,
    OFFSET_MASK,
    OFLAG_COPIED,
    UNALLOCATED,
    ZERO_ALLOC,
    ZERO_PLAIN,
    EntryCodec,
    L2Cache,
    be_u64,
)
from kvmlite.backends.block.qcow2.write import Qcow2Writer
from kvmlite.backends.block.raw import open_fd
from kvmlite.errors import ImageError

DEFAULT_L2_CACHE = 4 << 20  # bytes of L2 tables kept decoded
MAX_CHAIN = 32


class Qcow2Backend(BlockBackend):
    """A qcow2 image (version 2 or 3) as a BlockBackend."""

    format_name = "qcow2"

    def __init__(
        self,
        path: str,
        read_only: bool = False,
        *,
        snapshot: str | None = None,
        open_backing: bool = True,
        l2_cache_size: int = DEFAULT_L2_CACHE,
        repairing: bool = False,
        locking: bool = True,
        force_share: bool = False,
        _chain: tuple[str, ...] = (),
    ) -> None:
        """Open ``path``; ``snapshot`` (id or name) opens that snapshot read-only.

        ``repairing`` opens a damaged image read-write for ``img check -r`` (no
        refusal of the corrupt bit, no automatic refcount rebuild). ``locking``
        and ``force_share``: see kvmlite/backends/block/locking.py; they apply
        to the backing files too, which are always locked read-only.
        """
        self._locking = locking
        self._force_share = force_share
        self._repairing = repairing
        self.filename = path
        self.read_only = read_only or snapshot is not None
        self.backing: BlockBackend | None = None
        self._closed = False
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0  # requests doing data I/O outside the lock
        self.writer = Qcow2Writer(self)
        fd = open_fd(path, self.read_only, locking=locking, force_share=force_share)
        try:
            self._open(fd, snapshot, open_backing, l2_cache_size, _chain)
        except BaseException:
            if self.backing is not None:
                self.backing.close()
            os.close(fd)
            raise

    # -- opening --------------------------------------------------------------

    def _open(
        self,
        fd: int,
        snapshot: str | None,
        open_backing: bool,
        l2_cache_size: int,
        chain: tuple[str, ...],
    ) -> None:
        self.f = f = HostFile(fd, self.filename)
        buf = os.pread(fd, min(f.length, 1 << hdr.MAX_CLUSTER_BITS), 0)
        self.header = h = hdr.parse_header(buf, f.length, self.filename)
        self.cluster_bits = h.cluster_bits
        self.cs = h.cluster_size
        self.l2_entries = self.cs // 8
        self.codec = EntryCodec(h.cluster_bits)
        self.lazy = h.version >= 3 and bool(h.compatible_features & hdr.COMPAT_LAZY_REFCOUNTS)
        if (
            not self.read_only
            and not self._repairing
            and h.incompatible_features & hdr.INCOMPAT_CORRUPT
        ):
            raise ImageError(
                f"{self.filename}: image is marked corrupt; open it read-only or repair it "
                "with 'kvmlite img check -r all'"
            )
        self.snapshots: list[Snapshot] = []
        self.snapshot_table_size = 0
        if h.nb_snapshots:
            self.snapshots, self.snapshot_table_size = read_snapshots(
                f, h.snapshots_offset, h.nb_snapshots, self.cs
            )
        self.size = h.size
        self.l1_offset, l1_size = h.l1_table_offset, h.l1_size
        if snapshot is not None:
            snap = self.find_snapshot(snapshot)
            self.l1_offset, l1_size = snap.l1_table_offset, snap.l1_size
            self.size = snap.disk_size if snap.disk_size is not None else h.size
        self.l1 = be_u64(f.pread(self.l1_offset, l1_size * 8, "L1 table"))
        self.l2 = L2Cache(f, self.cs, l2_cache_size // self.cs)
        self.refcounts = Refcounts(
            f,
            h.cluster_bits,
            h.refcount_order,
            h.refcount_table_offset,
            h.refcount_table_clusters,
            self._set_refcount_table,
            self._barrier,
        )
        self._dirty_marked = False
        self._cached_compressed: tuple[int, bytes] = (-1, b"")
        self._cbytes_off = 0
        if open_backing and h.backing_file:
            self.backing = self._open_backing(chain)
        if not self.read_only and not self._repairing:
            self._prepare_for_writing()

    def _open_backing(self, chain: tuple[str, ...]) -> BlockBackend:
        from kvmlite.backends.block import open_image  # noqa: PLC0415 - cycle

        h = self.header
        assert h.backing_file is not None
        me = os.path.realpath(self.filename)
        chain = (*chain, me)
        if len(chain) > MAX_CHAIN:
            raise ImageError(f"{self.filename}: backing chain is deeper than {MAX_CHAIN} images")
        path = backing_path(self.filename, h.backing_file)
        if os.path.realpath(path) in chain:
            raise ImageError(
                f"{self.filename}: backing chain loops back to {path}; fix it with "
                "'kvmlite img rebase -u -b <file>'"
            )
        fmt = h.backing_format
        if fmt not in (None, "raw", "qcow2"):
            raise ImageError(f"{self.filename}: backing format {fmt!r} is not supported")
        return open_image(
            path,
            fmt,
            read_only=True,
            locking=self._locking,
            force_share=self._force_share,
            _chain=chain,
        )

    def _prepare_for_writing(self) -> None:
        h = self.header
        if h.incompatible_features & hdr.INCOMPAT_DIRTY:
            from kvmlite.backends.block.qcow2.check import repair  # noqa: PLC0415

            repair(self, leaks=True, errors=True)
            h.incompatible_features &= ~hdr.INCOMPAT_DIRTY
            self._write_header()
            self.f.sync()
        if h.autoclear_features:
            # We do not maintain bitmaps: clearing the bits tells others so.
            h.autoclear_features = 0
            self._write_header()

    def find_snapshot(self, ident: str) -> Snapshot:
        for s in self.snapshots:
            if s.id == ident or s.name == ident:
                return s
        raise ImageError(f"{self.filename}: no snapshot with id or name {ident!r}")

    # -- header ---------------------------------------------------------------

    def set_backing(self, name: str | None, fmt: str | None) -> None:
        """Point the image at another backing file (``rebase``); data is not touched."""
        self._check_writable()
        with self._lock:
            self.header.backing_file = name or None
            self.header.set_backing_format(fmt if name else None)
            self._write_header()
            self.f.sync()

    def clear_flags(self, flags: int) -> None:
        """Clear incompatible feature bits (dirty/corrupt) after a repair."""
        self._check_writable()
        self.header.incompatible_features &= ~flags
        self._write_header()
        self.f.sync()

    def _write_header(self) -> None:
        self.f.pwrite(0, self.header.pack())

    def _set_refcount_table(self, offset: int, clusters: int) -> None:
        self.header.refcount_table_offset = offset
        self.header.refcount_table_clusters = clusters
        self._write_header()

    def _barrier(self) -> None:
        """Order two metadata writes for power loss (not needed for kill -9)."""
        if not self.lazy:
            self.f.sync()

    # -- mapping --------------------------------------------------------------

    def _entry(self, vc: int) -> int:
        l1i, l2i = divmod(vc, self.l2_entries)
        if l1i >= len(self.l1):
            return 0
        l2off = self.l1[l1i] & OFFSET_MASK
        if not l2off:
            return 0
        return self.l2.get(l2off)[l2i]

    def _runs(self, offset: int, length: int) -> Iterator[tuple[int, int, int, int, int]]:
        """(guest offset, length, kind, host offset, entry) runs over the range.

        Neighbouring clusters merge when they are of the same kind and, for
        normal clusters, contiguous on the host.
        """
        cs = self.cs
        end = offset + length
        cur: list[int] | None = None
        pos = offset
        while pos < end:
            vc, inoff = divmod(pos, cs)
            n = min(cs - inoff, end - pos)
            entry = self._entry(vc)
            kind, host = self.codec.classify(entry)
            if kind == NORMAL:
                if host % cs:
                    raise ImageError(
                        f"{self.filename}: L2 entry for guest offset {vc * cs} is misaligned; "
                        "the image is damaged"
                    )
                host += inoff
            elif kind == ZERO_ALLOC:
                kind, host = ZERO_PLAIN, 0
            if cur is not None and kind == cur[2] and kind != COMPRESSED:
                if kind != NORMAL or cur[3] + cur[1] == host:
                    cur[1] += n
                    pos += n
                    continue
            if cur is not None:
                yield cur[0], cur[1], cur[2], cur[3], cur[4]
            cur = [pos, n, kind, host, entry]
            pos += n
        if cur is not None:
            yield cur[0], cur[1], cur[2], cur[3], cur[4]

    # -- reading --------------------------------------------------------------

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int:
        iov = IoVec(bufs)
        self._check_range(offset, iov.total)
        deferred: list[tuple[int, list[memoryview]]] = []
        with self._lock:
            vc, inoff = divmod(offset, self.cs)
            entry = self._entry(vc) if inoff + iov.total <= self.cs else 0
            host = entry & OFFSET_MASK
            if (
                entry & ~(OFLAG_COPIED | OFFSET_MASK) == 0
                and host
                and host % self.cs == 0
                and host + self.cs <= self.f.length
            ):
                # fast path: the whole request lies in one plain cluster
                deferred.append((host + inoff, iov.views))
            else:
                self._read_into(offset, iov, 0, iov.total, deferred)
            if deferred:
                self._inflight += 1
        if deferred:
            self._data_io(deferred, write=False)
        return iov.total

    def _data_io(self, ops: list[tuple[int, list[memoryview]]], write: bool) -> None:
        """Data transfers outside the lock, so I/O threads overlap (preadv drops the GIL).

        Safe because a cluster a request has mapped cannot be reused before the
        request ends: frees are deferred to ``_apply_frees``, which waits for
        in-flight requests to drain.
        """
        try:
            for host, views in ops:
                if write:
                    self.f.pwritev(host, views)
                else:
                    self.f.preadv(host, views, "data cluster")
        finally:
            with self._lock:
                self._inflight -= 1
                if not self._inflight:
                    self._idle.notify_all()

    def _apply_frees(self) -> None:
        """Sync, wait for in-flight data I/O, then drop the refcounts of freed clusters."""
        self.f.sync()
        self._idle.wait_for(lambda: self._inflight == 0)
        self.refcounts.apply_frees()

    def _read_into(
        self,
        offset: int,
        iov: IoVec,
        pos: int,
        length: int,
        deferred: list[tuple[int, list[memoryview]]] | None = None,
    ) -> None:
        for goff, n, kind, host, entry in self._runs(offset, length):
            dst = iov.slice(pos + goff - offset, n)
            if kind == NORMAL:
                if deferred is not None and host + n <= self.f.length:
                    deferred.append((host, dst))
                else:
                    self.f.preadv(host, dst, "data cluster")
            elif kind == UNALLOCATED and self.backing is not None:
                self._read_backing(goff, dst, n)
            elif kind == COMPRESSED:
                data = self._decompressed(entry)
                inoff = goff % self.cs
                copy_into(dst, memoryview(data)[inoff : inoff + n])
            else:
                fill_zero(dst)

    def _read_backing(self, goff: int, dst: list[memoryview], n: int) -> None:
        assert self.backing is not None
        inside = max(0, min(n, self.backing.size - goff))
        if inside:
            self.backing.readv(goff, IoVec(dst).slice(0, inside))
        if inside < n:
            fill_zero(IoVec(dst).slice(inside, n - inside))

    def _decompressed(self, entry: int) -> bytes:
        if self._cached_compressed[0] == entry:
            return self._cached_compressed[1]
        off, start, span = self.codec.compressed_range(entry)
        end = min(start + span, self.f.length)
        if off >= end:
            raise ImageError(
                f"{self.filename}: compressed cluster at {off} lies outside the file; "
                "the image is damaged"
            )
        raw = self.f.pread(off, end - off, "compressed cluster")
        data = decompress(raw, self.cs, self.header.compression_type, self.filename)
        self._cached_compressed = (entry, data)
        return data

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        if length is None:
            length = self.size - offset
        self._check_range(offset, length)
        with self._lock:
            runs = list(self._runs(offset, length))
        merged: list[Extent] = []
        for goff, n, kind, host, _entry in runs:
            if kind == UNALLOCATED and self.backing is not None:
                inside = max(0, min(n, self.backing.size - goff))
                parts = list(self.backing.extents(goff, inside)) if inside else []
                parts = [
                    Extent(
                        e.offset,
                        e.length,
                        e.data,
                        e.zero,
                        e.depth + 1,
                        e.host_offset,
                        e.compressed,
                        e.filename,
                    )
                    for e in parts
                ]
                if inside < n:
                    parts.append(Extent(goff + inside, n - inside, False, True, 1, None))
            elif kind == NORMAL:
                parts = [Extent(goff, n, True, False, 0, host, False, self.filename)]
            elif kind == COMPRESSED:
                parts = [Extent(goff, n, True, False, 0, None, True, self.filename)]
            elif kind == ZERO_PLAIN:
                parts = [Extent(goff, n, False, True, 0, None, False, self.filename)]
            else:
                parts = [Extent(goff, n, False, True, 0, None)]
            for e in parts:
                if merged and _mergeable(merged[-1], e):
                    merged[-1] = _merge(merged[-1], e)
                else:
                    merged.append(e)
        yield from merged

    # -- writing (kvmlite/backends/block/qcow2/write.py) ----------------------

    def writev(self, offset: int, bufs: Sequence[bytes | memoryview]) -> int:
        return self.writer.writev(offset, bufs)

    def flush(self) -> None:
        self.writer.flush()

    def discard(self, offset: int, length: int) -> None:
        self.writer.discard(offset, length)

    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None:
        self.writer.write_zeroes(offset, length, unmap)

    def deallocate(self, offset: int, length: int) -> None:
        self.writer.deallocate(offset, length)

    def write_compressed(self, offset: int, data: bytes) -> None:
        self.writer.write_compressed(offset, data)

    def resize(self, new_size: int) -> None:
        self.writer.resize(new_size)

    # -- lifetime -------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        with self._lock:
            self._closed = True
            try:
                if not self.read_only:
                    self.writer.close()
            finally:
                if self.backing is not None:
                    self.backing.close()
                os.close(self.f.fd)


def _mergeable(a: Extent, b: Extent) -> bool:
    if (a.data, a.zero, a.depth, a.compressed, a.filename) != (
        b.data,
        b.zero,
        b.depth,
        b.compressed,
        b.filename,
    ) or a.offset + a.length != b.offset:
        return False
    if a.host_offset is None or b.host_offset is None:
        return a.host_offset is None and b.host_offset is None
    return a.host_offset + a.length == b.host_offset


def _merge(a: Extent, b: Extent) -> Extent:
    return Extent(
        a.offset,
        a.length + b.length,
        a.data,
        a.zero,
        a.depth,
        a.host_offset,
        a.compressed,
        a.filename,
    )


def backing_path(image: str, name: str) -> str:
    """A backing file name is relative to the directory of the image naming it."""
    if os.path.isabs(name):
        return name
    return os.path.join(os.path.dirname(os.path.abspath(image)), name)

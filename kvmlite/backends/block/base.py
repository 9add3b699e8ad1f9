"""The block backend interface that virtio-blk, the CD-ROM, snapshots and migration use.

A backend is the host side of a disk (DESIGN.md, "The house": backends/block).
Every format (raw, qcow2) sits behind the same vectored, offset-addressed API so
devices never learn which format they talk to.

Thread-safety: ``readv``/``writev`` may be called from several I/O threads at
once. Raw images are naturally safe (``os.preadv``/``os.pwritev``); formats with
metadata serialise metadata updates behind a lock.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self


@dataclass(frozen=True)
class Extent:
    """A run of guest bytes with the same allocation status (like ``qemu-img map``).

    ``data``: the bytes come from a file of the chain (``depth`` says which,
    0 = this image); ``zero``: they read as zeros; ``host_offset``: where the
    run starts in the file at ``depth`` when it is stored uncompressed there.
    """

    offset: int
    length: int
    data: bool
    zero: bool
    depth: int = 0
    host_offset: int | None = None
    compressed: bool = False
    filename: str | None = None


def iov_length(bufs: Sequence[bytes | memoryview]) -> int:
    """Total length of a buffer list (memoryviews count bytes, not items)."""
    return sum(memoryview(b).nbytes for b in bufs)


class BlockBackend(abc.ABC):
    """A virtual disk of ``size`` bytes addressed by byte offset."""

    size: int
    read_only: bool
    filename: str
    format_name: str

    @abc.abstractmethod
    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int:
        """Fill ``bufs`` in order from ``offset``; return the bytes read."""

    @abc.abstractmethod
    def writev(self, offset: int, bufs: Sequence[bytes | memoryview]) -> int:
        """Write ``bufs`` in order at ``offset``; return the bytes written."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make every completed write (data and metadata) stable (fdatasync)."""

    @abc.abstractmethod
    def discard(self, offset: int, length: int) -> None:
        """Tell the backend the range is unused (a hint: freed parts read as zeros)."""

    @abc.abstractmethod
    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None:
        """Make the range read as zeros; ``unmap`` allows freeing the storage."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush metadata and release the files; idempotent."""

    def readv_nowait(self, offset: int, bufs: Sequence[memoryview]) -> int | None:
        """Read only if that cannot block (data in the page cache), else None.

        The caller (virtio-blk on the VMM's I/O loop) then completes the
        request at once instead of handing it to an I/O thread and back,
        which costs as much as a cached 1 MiB copy. Default: never possible.
        """
        return None

    def writev_nowait(self, offset: int, bufs: Sequence[bytes | memoryview]) -> int | None:
        """Write only if that cannot block, else None (see ``readv_nowait``)."""
        return None

    def io_target(self, offset: int, length: int, write: bool) -> tuple[int, int] | None:
        """(host fd, offset in it) where guest ``[offset, offset+length)`` lies in one
        piece, if an I/O engine may read or write it there directly; else None
        (the engine then calls ``readv``/``writev`` on a thread). Default: None.
        """
        return None

    def flush_target(self) -> int | None:
        """The fd whose fdatasync is the whole of ``flush``, or None. Default: None."""
        return None

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        """Allocation map of ``[offset, offset+length)``; default: all data."""
        if length is None:
            length = self.size - offset
        self._check_range(offset, length)
        if length:
            yield Extent(offset, length, data=True, zero=False, depth=0, host_offset=offset)

    def read(self, offset: int, length: int) -> bytes:
        """Convenience: read ``length`` bytes at ``offset``."""
        buf = bytearray(length)
        self.readv(offset, [memoryview(buf)])
        return bytes(buf)

    def write(self, offset: int, data: bytes | memoryview) -> int:
        """Convenience: write one buffer at ``offset``."""
        return self.writev(offset, [data])

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(
                f"I/O range [{offset}, {offset + length}) is outside the disk (size {self.size})"
            )

    def _check_writable(self) -> None:
        if self.read_only:
            raise PermissionError(f"{self.filename}: image is opened read-only")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

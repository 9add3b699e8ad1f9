"""Guest RAM to a snapshot's memory file, and the other way.

The memory file is guest RAM byte for byte, regions one after the other in
guest-physical order (the layout of ``GuestMemory.create``'s memfd), so a
restore maps it straight back (``GuestMemory.from_file``, MAP_PRIVATE).
Pages the guest never touched are holes in the memfd (SEEK_DATA/SEEK_HOLE
find them) and stay holes in the file: a 4 GiB guest that used 20 MiB
writes 20 MiB.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator

from kvmlite.memory import GuestMemory, Region

#: One write; a progress report after each.
CHUNK = 16 << 20


def _extents(region: Region) -> Iterator[tuple[int, int]]:
    """(offset, length) of the parts of ``region`` that may hold data."""
    if region.fd is None:
        yield 0, region.size
        return
    start, end = region.fd_offset, region.fd_offset + region.size
    pos = start
    while pos < end:
        try:
            data = os.lseek(region.fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole is left
                return
            raise
        if data >= end:
            return
        hole = min(os.lseek(region.fd, data, os.SEEK_HOLE), end)
        yield data - start, hole - data
        pos = hole


def write_memory(
    memory: GuestMemory, fd: int, progress: Callable[[int], None] | None = None
) -> int:
    """Write guest RAM to the file ``fd`` (made ``memory.size`` bytes long,
    holes where RAM is untouched); ``progress(n)`` after every ``n`` bytes
    of guest RAM dealt with. Returns the bytes of data written."""
    written = 0
    file_offset = 0
    for region in memory.regions:
        done = 0
        for offset, length in _extents(region):
            if progress is not None and offset > done:
                progress(offset - done)
            end = offset + length
            while offset < end:
                n = min(CHUNK, end - offset)
                view = region.buf[offset : offset + n]
                wrote = 0
                while wrote < n:
                    wrote += os.pwrite(fd, view[wrote:], file_offset + offset + wrote)
                written += n
                offset += n
                if progress is not None:
                    progress(n)
            done = end
        if progress is not None and region.size > done:
            progress(region.size - done)
        file_offset += region.size
    os.ftruncate(fd, memory.size)
    return written

"""Bounds-checked access to the image file that holds a qcow2 image.

Every offset that reaches this class came from hostile metadata; reads past
the end of the file are refused (the image is truncated or damaged) rather
than silently returning short data, and nothing is ever read at a negative
offset or written beyond what the caller allocated.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from kvmlite.errors import ImageError


class HostFile:
    """An open image file plus its current length."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.length = os.fstat(fd).st_size

    def pread(self, offset: int, length: int, what: str) -> bytes:
        """Read exactly ``length`` bytes or raise ImageError naming ``what``."""
        if offset < 0 or offset + length > self.length:
            raise ImageError(
                f"{self.name}: {what} at offset {offset} (length {length}) lies outside the "
                f"file ({self.length} bytes); the image is truncated or damaged "
                "(try 'kvmlite img check')"
            )
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise ImageError(f"{self.name}: short read of {what} at offset {offset}")
        return data

    def preadv(self, offset: int, bufs: Sequence[memoryview], what: str) -> None:
        total = sum(b.nbytes for b in bufs)
        if offset < 0 or offset + total > self.length:
            raise ImageError(
                f"{self.name}: {what} at offset {offset} (length {total}) lies outside the "
                "file; the image is damaged (try 'kvmlite img check')"
            )
        done = os.preadv(self.fd, bufs, offset)
        while done < total:
            n = os.preadv(self.fd, _skip(bufs, done), offset + done)
            if n <= 0:
                raise ImageError(f"{self.name}: short read of {what} at offset {offset}")
            done += n

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        self.pwritev(offset, [memoryview(data)])

    def pwritev(self, offset: int, bufs: Sequence[memoryview]) -> None:
        if offset < 0:
            raise ImageError(f"{self.name}: refusing to write at negative offset {offset}")
        total = sum(b.nbytes for b in bufs)
        done = os.pwritev(self.fd, bufs, offset)  # nearly always complete at once
        while done < total:
            done += os.pwritev(self.fd, _skip(bufs, done), offset + done)
        if offset + total > self.length:
            self.length = offset + total

    def extend(self, length: int) -> None:
        """Grow the file to ``length`` bytes (a hole: reads as zeros)."""
        if length > self.length:
            os.ftruncate(self.fd, length)
            self.length = length

    def sync(self) -> None:
        os.fdatasync(self.fd)


def _skip(bufs: Sequence[memoryview], skip: int) -> list[memoryview]:
    out: list[memoryview] = []
    for mv in bufs:
        if skip >= mv.nbytes:
            skip -= mv.nbytes
            continue
        out.append(mv[skip:] if skip else mv)
        skip = 0
    return out

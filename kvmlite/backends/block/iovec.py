"""Slicing a list of buffers by byte range (for splitting guest I/O at cluster edges)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence


class IoVec:
    """A scatter/gather list viewed as one flat run of bytes, without copying."""

    def __init__(self, bufs: Sequence[bytes | bytearray | memoryview]) -> None:
        self.views: list[memoryview] = []
        self.starts: list[int] = []
        pos = 0
        for b in bufs:
            mv = memoryview(b)
            if mv.format != "B" or mv.ndim != 1:
                mv = mv.cast("B")
            if mv.nbytes:
                self.views.append(mv)
                self.starts.append(pos)
                pos += mv.nbytes
        self.total = pos

    def slice(self, start: int, length: int) -> list[memoryview]:
        """Views covering ``[start, start+length)`` of the flat run."""
        out: list[memoryview] = []
        if length <= 0:
            return out
        i = bisect.bisect_right(self.starts, start) - 1
        end = start + length
        while i < len(self.views) and self.starts[i] < end:
            s = self.starts[i]
            mv = self.views[i]
            lo = max(start - s, 0)
            hi = min(end - s, mv.nbytes)
            out.append(mv[lo:hi])
            i += 1
        return out


def fill_zero(views: Sequence[memoryview]) -> None:
    for mv in views:
        mv[:] = bytes(mv.nbytes)


def copy_into(views: Sequence[memoryview], data: bytes | memoryview) -> None:
    pos = 0
    src = memoryview(data)
    for mv in views:
        mv[:] = src[pos : pos + mv.nbytes]
        pos += mv.nbytes

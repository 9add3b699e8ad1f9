"""In-test fakes of host backends for the virtio device tests."""

from __future__ import annotations

from collections.abc import Sequence


class MemBlockBackend:
    """A BlockBackend over a bytearray that records what it was asked."""

    def __init__(self, size: int, *, read_only: bool = False, fail: bool = False) -> None:
        self.data = bytearray(size)
        self.size = size
        self.read_only = read_only
        self.fail = fail
        self.flushes = 0
        self.discards: list[tuple[int, int]] = []
        self.zeroes: list[tuple[int, int, bool]] = []

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int:
        if self.fail:
            raise OSError(5, "Input/output error")
        pos = offset
        for b in bufs:
            n = len(b)
            b[:] = self.data[pos : pos + n]
            pos += n
        return pos - offset

    def writev(self, offset: int, bufs: Sequence[memoryview]) -> int:
        if self.fail:
            raise OSError(5, "Input/output error")
        assert not self.read_only
        pos = offset
        for b in bufs:
            self.data[pos : pos + len(b)] = b
            pos += len(b)
        return pos - offset

    def flush(self) -> None:
        self.flushes += 1

    def discard(self, offset: int, length: int) -> None:
        self.discards.append((offset, length))
        self.data[offset : offset + length] = bytes(length)

    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None:
        self.zeroes.append((offset, length, unmap))
        self.data[offset : offset + length] = bytes(length)

    def close(self) -> None:
        pass


class FakeChar:
    """A char backend that records output and hands out queued input."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.pending = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def fileno(self) -> int | None:
        return None

    def read_available(self) -> bytes:
        data, self.pending = bytes(self.pending), bytearray()
        return data

    def close(self) -> None:
        pass

"""In-test fakes and helpers for the SCSI model tests."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from kvmlite.devices.scsi import ScsiResult, Sense


class MemDisk:
    """A block backend over a bytearray that records flushes, discards and zeroes."""

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
            b[:] = self.data[pos : pos + len(b)]
            pos += len(b)
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


def iso(blocks: int) -> MemDisk:
    """A read-only "ISO" whose block i starts with the bytes of i."""
    d = MemDisk(blocks * 2048, read_only=True)
    for i in range(blocks):
        d.data[i * 2048 : i * 2048 + 4] = struct.pack(">I", i)
    return d


def run(unit: object, cdb: bytes, in_len: int = 4096, out: bytes = b"") -> tuple[ScsiResult, bytes]:
    """Execute ``cdb`` with a data-in buffer of ``in_len``; returns (result, data-in bytes)."""
    buf = bytearray(in_len)
    views = [memoryview(buf)] if in_len else []
    outs = [memoryview(out)] if out else []
    r = unit.execute(cdb, views, outs)  # type: ignore[attr-defined]
    return r, bytes(buf[: r.data_len])


def sense_of(r: ScsiResult) -> tuple[int, int, int]:
    s = Sense.parse(r.sense)
    return (s.key, s.asc, s.ascq)


def cdb10(opcode: int, lba: int = 0, length: int = 0, byte1: int = 0) -> bytes:
    return struct.pack(">BBIBHB", opcode, byte1, lba, 0, length, 0)

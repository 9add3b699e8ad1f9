"""Descriptor chains as a device sees them (virtio 1.2 §2.7.5, §2.7.7), and
the errors a malformed ring or chain raises. Split out of queue.py, which
walks the ring and builds these; re-exported there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from kvmlite.memory import GuestMemory


class QueueError(Exception):
    """The guest broke the ring itself; the device should set NEEDS_RESET.

    Not a ``KvmliteError``: it never leaves the device model (DESIGN.md rule 6).
    """


class ChainError(QueueError):
    """One descriptor chain is malformed; ``head`` is its head index."""

    def __init__(self, head: int, reason: str) -> None:
        super().__init__(f"descriptor chain {head}: {reason}")
        self.head = head
        self.reason = reason


class Descriptor(NamedTuple):
    """One guest buffer of a chain (indirect tables already expanded).

    A NamedTuple rather than a frozen dataclass: three times cheaper to build,
    and one is built per buffer on the hot path.
    """

    addr: int
    length: int
    writable: bool


@dataclass(slots=True)
class DescriptorChain:
    """A validated chain: readable buffers first, then writable ones (§2.7.4.2)."""

    head: int
    descriptors: list[Descriptor] = field(default_factory=list)

    @property
    def readable(self) -> list[Descriptor]:
        return [d for d in self.descriptors if not d.writable]

    @property
    def writable(self) -> list[Descriptor]:
        return [d for d in self.descriptors if d.writable]

    @property
    def readable_len(self) -> int:
        return sum(d.length for d in self.descriptors if not d.writable)

    @property
    def writable_len(self) -> int:
        return sum(d.length for d in self.descriptors if d.writable)

    def read_all(self, memory: GuestMemory) -> bytes:
        """Concatenate the readable buffers: only for a chain whose length the caller bounded.

        Otherwise use ``read_prefix`` or ``iter_readable``: a chain may be
        queue-size descriptors that each cover all of guest RAM.
        """
        # Zero-length buffers are legal and their address is never touched.
        return b"".join(memory.read(d.addr, d.length) for d in self.readable if d.length)

    def read_prefix(self, memory: GuestMemory, limit: int) -> bytes:
        """The first ``limit`` bytes of the readable buffers (fewer if the chain is shorter).

        The descriptors of one chain may each cover all of guest RAM, so a
        device that needs only a header reads this much and no more.
        """
        parts: list[bytes] = []
        for d in self.readable:
            if limit <= 0:
                break
            if d.length:
                n = min(d.length, limit)
                parts.append(memory.read(d.addr, n))
                limit -= n
        return b"".join(parts)

    def iter_readable(self, memory: GuestMemory, chunk: int) -> Iterator[bytes]:
        """The readable bytes in copies of at most ``chunk`` bytes each.

        What the host holds at once stays at ``chunk`` bytes however long the
        chain is (64 descriptors of all of RAM would be 64x RAM in one piece).
        """
        for d in self.readable:
            for off in range(0, d.length, chunk):
                yield memory.read(d.addr + off, min(chunk, d.length - off))

    def write_all(self, memory: GuestMemory, data: bytes | memoryview) -> int:
        """Scatter ``data`` over the writable buffers; return the bytes written."""
        data = memoryview(data)
        if len(self.descriptors) == 1:  # the common receive buffer: one descriptor
            d = self.descriptors[0]
            n = min(d.length, len(data)) if d.writable else 0
            if n:
                memory.write(d.addr, data[:n])
            return n
        done = 0
        for d in self.writable:
            if done >= len(data):
                break
            if not d.length:
                continue
            n = min(d.length, len(data) - done)
            memory.write(d.addr, data[done : done + n])
            done += n
        return done

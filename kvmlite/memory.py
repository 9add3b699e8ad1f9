"""Guest RAM: memfd-backed regions addressed by guest-physical address.

Theory of operation
-------------------
Guest RAM is a short list of ``Region`` objects, each a contiguous range of
guest-physical addresses backed by a host buffer: normally a ``memfd`` mapped
shared (so the same pages can be handed to KVM as a memory slot, to a
vhost-user frontend/backend by file descriptor, and saved by snapshot and
migration), or any writable buffer such as a ``bytearray`` in tests.

On x86 the 32-bit PCI hole (``PCI_HOLE_START`` .. 4 GiB) holds MMIO, the
LAPIC and IOAPIC, so a large guest's RAM is split: the part that fits below
the hole starts at 0, the rest starts at 4 GiB (``layout_x86``).

Every access is bounds-checked against the regions. An access that is not
wholly inside one region raises ``GuestMemoryError``; callers that handle
guest-supplied addresses (virtqueues, device DMA) turn that into a device
error the guest sees (DESIGN.md rule 6). ``view()`` gives a zero-copy
``memoryview`` so that block and network I/O can go straight between host
files and guest RAM (``os.preadv``/``os.pwritev``).
"""

from __future__ import annotations

import mmap
import os
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field

from kvmlite.errors import ConfigError, GuestMemoryError

PAGE_SIZE = 4096
MIB = 1 << 20
GIB = 1 << 30
#: Start of the 32-bit MMIO hole on x86 (PCI BARs, IOAPIC, LAPIC live above it).
PCI_HOLE_START = 3 * GIB
FOUR_GIB = 4 * GIB


@dataclass
class Region:
    """A contiguous range of guest-physical memory backed by a host buffer."""

    gpa: int
    size: int
    buf: memoryview = field(repr=False)
    fd: int | None = None  # memfd, when the region is shareable
    fd_offset: int = 0
    _mmap: mmap.mmap | None = field(default=None, repr=False)

    @property
    def end(self) -> int:
        return self.gpa + self.size

    def host_address(self) -> int:
        """Host virtual address of the region's first byte (for KVM memory slots)."""
        import ctypes

        return ctypes.addressof(ctypes.c_char.from_buffer(self.buf))


def layout_x86(size: int) -> list[tuple[int, int]]:
    """Split ``size`` bytes of RAM around the PCI hole: [(gpa, size), ...]."""
    low = min(size, PCI_HOLE_START)
    ranges = [(0, low)]
    if size > low:
        ranges.append((FOUR_GIB, size - low))
    return ranges


class GuestMemory:
    """Bounds-checked access to guest RAM by guest-physical address."""

    def __init__(self, regions: list[Region]) -> None:
        regions = sorted(regions, key=lambda r: r.gpa)
        for a, b in zip(regions, regions[1:], strict=False):
            if a.end > b.gpa:
                raise ConfigError(f"memory regions overlap at {b.gpa:#x}")
        self.regions = regions
        self._starts = [r.gpa for r in regions]
        self._ends = [r.end for r in regions]  # Region.end is a property: see _index
        self._fd: int | None = None  # the memfd behind the regions, when create() made it

    # -- construction -------------------------------------------------------

    @classmethod
    def create(cls, size: int, *, name: str = "kvmlite-ram") -> GuestMemory:
        """Allocate ``size`` bytes of memfd-backed RAM laid out for x86."""
        if size <= 0 or size % PAGE_SIZE:
            raise ConfigError(f"memory size {size} must be a positive multiple of 4 KiB")
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            regions = []
            offset = 0
            for gpa, rsize in layout_x86(size):
                m = mmap.mmap(
                    fd, rsize, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset
                )
                regions.append(Region(gpa, rsize, memoryview(m), fd, offset, m))
                offset += rsize
        except OSError as e:
            os.close(fd)
            raise ConfigError(f"cannot allocate {size >> 20} MiB of guest memory: {e}") from e
        mem = cls(regions)
        mem._fd = fd
        return mem

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], size: int) -> GuestMemory:
        """RAM mapped privately from a file of exactly ``size`` bytes (a snapshot's
        memory file), laid out for x86 as ``create`` does.

        MAP_PRIVATE: a page is read from the file the first time the guest (or
        KVM, or a device) touches it, and a write makes a private copy, so the
        file never changes and the cost of the mapping does not grow with RAM.
        Such memory has no fd to share (no vhost-user back-ends).
        """
        if size <= 0 or size % PAGE_SIZE:
            raise ConfigError(f"memory size {size} must be a positive multiple of 4 KiB")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise ConfigError(f"cannot map memory file {os.fspath(path)}: {e.strerror}") from e
        try:
            actual = os.fstat(fd).st_size
            if actual != size:
                raise ConfigError(
                    f"memory file {os.fspath(path)} has {actual} bytes, the snapshot says {size}:"
                    " it is not this snapshot's memory file"
                )
            regions = []
            offset = 0
            for gpa, rsize in layout_x86(size):
                m = mmap.mmap(
                    fd, rsize, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset
                )
                regions.append(Region(gpa, rsize, memoryview(m), None, offset, m))
                offset += rsize
        except OSError as e:
            raise ConfigError(f"cannot map memory file {os.fspath(path)}: {e}") from e
        finally:
            os.close(fd)  # the mappings keep the file
        return cls(regions)

    @classmethod
    def from_buffer(cls, buf: bytearray | memoryview, gpa: int = 0) -> GuestMemory:
        """Wrap a writable buffer as guest RAM at ``gpa`` (tests, tools)."""
        view = memoryview(buf).cast("B")
        return cls([Region(gpa, len(view), view)])

    def close(self) -> None:
        for r in self.regions:
            try:
                r.buf.release()
                if r._mmap is not None:
                    r._mmap.close()
            except BufferError:
                # Views of guest RAM are still alive somewhere (an in-flight
                # I/O); the mapping goes away with the last of them.
                pass
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- lookup ---------------------------------------------------------------

    @property
    def size(self) -> int:
        return sum(r.size for r in self.regions)

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions)

    def _index(self, gpa: int, length: int) -> int:
        """Index of the region wholly containing [gpa, gpa+length), or -1.

        Plain lists and no exception: every descriptor of every chain is checked.
        """
        i = bisect_right(self._starts, gpa) - 1
        return i if i >= 0 and length >= 0 and gpa + length <= self._ends[i] else -1

    def region_of(self, gpa: int, length: int = 1) -> Region:
        """The region wholly containing [gpa, gpa+length), or GuestMemoryError."""
        i = self._index(gpa, length)
        if i < 0:
            raise GuestMemoryError(f"guest access {gpa:#x}+{length:#x} is outside guest RAM")
        return self.regions[i]

    def contains(self, gpa: int, length: int = 1) -> bool:
        return self._index(gpa, length) >= 0

    # -- access ---------------------------------------------------------------

    def view(self, gpa: int, length: int) -> memoryview:
        """A zero-copy view of [gpa, gpa+length); it must lie in one region."""
        r = self.region_of(gpa, length)
        off = gpa - r.gpa
        return r.buf[off : off + length]

    def read(self, gpa: int, length: int) -> bytes:
        return bytes(self.view(gpa, length))

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        self.view(gpa, len(data))[:] = data

    def read_int(self, gpa: int, size: int) -> int:
        """Little-endian unsigned integer of ``size`` bytes."""
        return int.from_bytes(self.view(gpa, size), "little")

    def write_int(self, gpa: int, size: int, value: int) -> None:
        self.view(gpa, size)[:] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def fill(self, gpa: int, length: int, byte: int = 0) -> None:
        v = self.view(gpa, length)
        v[:] = bytes([byte]) * length

"""PIO and MMIO buses: which device answers a trapped guest access.

Theory of operation
-------------------
A ``Bus`` holds non-overlapping ``[base, base + size)`` ranges, each owned by
one device, kept sorted by base in two parallel lists so that a lookup is one
``bisect_right`` over plain ints. The same class serves the x86 port-I/O
space (16-bit addresses) and the MMIO space (64-bit addresses).

A device sees an *offset* from its base, never a guest address (DESIGN.md,
"The house"), so one device class can sit at any base (COM1..COM4).

Invariants:

* ranges never overlap and never have a size <= 0 (``insert`` refuses, with a
  ``ConfigError`` naming both devices: a builder bug or a bad user config);
* an access must lie wholly inside one range. One that starts inside a device
  and runs past its end is refused: the bus answers as if no device were
  there (``None`` / ``False``) rather than hand the device an access it never
  promised to handle;
* inserts and removes may run while other threads dispatch: the table is
  replaced whole (copy on write), so a lookup never sees half an update;
* an exception out of a device's handler (a device bug; guest input must never
  cause one, rule 6) is logged and the access is treated as unclaimed, so a
  bad device model cannot kill the vCPU thread.

The hot path (``dispatch_read`` / ``dispatch_write``) is kept to a bisect, two
compares and the handler call: it runs on every trapped access.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_right
from collections.abc import Iterator
from typing import NamedTuple, Protocol

from kvmlite.errors import ConfigError

log = logging.getLogger(__name__)

#: At most this many distinct unclaimed addresses are logged per bus.
UNCLAIMED_LOG_LIMIT = 64


class BusDevice(Protocol):
    """A register-level device model (the interface every bus device has)."""

    def read(self, offset: int, size: int) -> bytes:
        """Return ``size`` bytes read at ``offset`` from the device's base."""
        ...

    def write(self, offset: int, data: bytes) -> None:
        """Handle a write of ``data`` at ``offset`` from the device's base."""
        ...


class BusRange(NamedTuple):
    """One device's place on a bus."""

    base: int
    size: int
    device: BusDevice

    @property
    def end(self) -> int:
        return self.base + self.size


def _name(device: object) -> str:
    return getattr(device, "name", None) or type(device).__name__


class Bus:
    """A sorted set of device ranges; used for both port I/O and MMIO."""

    def __init__(self, name: str = "bus") -> None:
        self.name = name
        # (bases, ends, devices): replaced as a whole, never changed in place,
        # so a vCPU thread dispatching while another thread inserts or
        # removes (a guest moving a PCI BAR) sees either the old table or
        # the new one, never a mix. The lock orders the writers.
        self._table: tuple[list[int], list[int], list[BusDevice]] = ([], [], [])
        self._lock = threading.Lock()
        self._unclaimed_logged: set[int] = set()

    def __len__(self) -> int:
        return len(self._table[0])

    def insert(self, device: BusDevice, base: int, size: int) -> None:
        """Place ``device`` at ``[base, base + size)``; refuse overlaps and empty ranges."""
        if size <= 0:
            raise ConfigError(
                f"{self.name}: cannot place {_name(device)} at {base:#x} with size {size}: "
                "a device range must be at least one byte"
            )
        if base < 0:
            raise ConfigError(f"{self.name}: negative base {base:#x} for {_name(device)}")
        end = base + size
        with self._lock:
            bases, ends, devices = list(self._table[0]), list(self._table[1]), list(self._table[2])
            i = bisect_right(bases, base)
            # Only the neighbours can overlap: the range before (if it runs
            # past base) and the range after (if it starts before end).
            for j in (i - 1, i):
                if 0 <= j < len(bases) and bases[j] < end and base < ends[j]:
                    raise ConfigError(
                        f"{self.name}: {_name(device)} at [{base:#x}, {end:#x}) overlaps "
                        f"{_name(devices[j])} at [{bases[j]:#x}, {ends[j]:#x}); "
                        "move one of them"
                    )
            bases.insert(i, base)
            ends.insert(i, end)
            devices.insert(i, device)
            self._table = (bases, ends, devices)

    def remove(self, base: int) -> BusDevice:
        """Take the device whose range starts at ``base`` off the bus and return it."""
        with self._lock:
            bases, ends, devices = list(self._table[0]), list(self._table[1]), list(self._table[2])
            i = bisect_right(bases, base) - 1
            if i < 0 or bases[i] != base:
                raise ConfigError(f"{self.name}: no device starts at {base:#x}")
            del bases[i]
            del ends[i]
            device = devices.pop(i)
            self._table = (bases, ends, devices)
            return device

    def find(self, addr: int, size: int = 1) -> BusRange | None:
        """The range that wholly contains ``[addr, addr + size)``, if any."""
        bases, ends, devices = self._table
        i = bisect_right(bases, addr) - 1
        if i < 0 or addr + size > ends[i]:
            return None
        return BusRange(bases[i], ends[i] - bases[i], devices[i])

    def devices(self) -> Iterator[BusRange]:
        """All ranges in address order (for the builder, snapshot and debugging)."""
        bases, ends, devices = self._table
        for base, end, dev in zip(bases, ends, devices, strict=True):
            yield BusRange(base, end - base, dev)

    # -- hot path -------------------------------------------------------------

    def dispatch_read(self, addr: int, size: int) -> bytes | None:
        """Read from the device at ``addr``; ``None`` when no device claims it."""
        bases, ends, devices = self._table
        i = bisect_right(bases, addr) - 1
        if i < 0 or addr + size > ends[i]:
            return None
        try:
            return devices[i].read(addr - bases[i], size)
        except Exception:
            log.exception("%s: %s failed a read at %#x", self.name, _name(devices[i]), addr)
            return None

    def dispatch_write(self, addr: int, data: bytes) -> bool:
        """Write to the device at ``addr``; ``False`` when no device claims it."""
        bases, ends, devices = self._table
        i = bisect_right(bases, addr) - 1
        if i < 0 or addr + len(data) > ends[i]:
            return False
        try:
            devices[i].write(addr - bases[i], data)
        except Exception:
            log.exception("%s: %s failed a write at %#x", self.name, _name(devices[i]), addr)
            return False
        return True

    # -- what the VMM does with unclaimed accesses ------------------------------

    def read(self, addr: int, size: int) -> bytes:
        """``dispatch_read``, but an unclaimed read gives all-ones (an open bus) and a log line."""
        data = self.dispatch_read(addr, size)
        if data is None:
            self._log_unclaimed(addr, size, "read")
            return b"\xff" * size
        return data

    def write(self, addr: int, data: bytes) -> None:
        """``dispatch_write``, but an unclaimed write is dropped with a log line."""
        if not self.dispatch_write(addr, data):
            self._log_unclaimed(addr, len(data), "write")

    def _log_unclaimed(self, addr: int, size: int, kind: str) -> None:
        # Guests probe for absent hardware all the time (Linux pokes ISA ports
        # at boot): log each address once, and stop after a bounded number so a
        # guest cannot fill the log.
        seen = self._unclaimed_logged
        if addr in seen or len(seen) >= UNCLAIMED_LOG_LIMIT:
            return
        seen.add(addr)
        more = (
            " (further unclaimed addresses are not logged)"
            if len(seen) == UNCLAIMED_LOG_LIMIT
            else ""
        )
        log.debug("%s: unclaimed %d-byte %s at %#x%s", self.name, size, kind, addr, more)

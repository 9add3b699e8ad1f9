"""Serialising device access between vCPU threads and the I/O loop.

Register accesses arrive on vCPU threads; console input, queue
notifications and I/O completions on the I/O loop. A device model is not
thread-safe by itself (it does no I/O and keeps no locks, DESIGN.md rule 1),
so the VMM puts the lock around it.
"""

from __future__ import annotations

import threading
from typing import Any


class LockedDevice:
    """Serialises a device's register access between vCPU and I/O threads."""

    __slots__ = ("device", "lock", "read", "write")

    def __init__(self, device: Any, lock: Any = None) -> None:
        self.device = device
        self.lock = lock or threading.Lock()

        def read(offset: int, size: int) -> bytes:
            with self.lock:
                return device.read(offset, size)

        def write(offset: int, data: bytes) -> None:
            with self.lock:
                device.write(offset, data)

        self.read = read
        self.write = write

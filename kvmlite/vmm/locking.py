"""The VMM's locking story, in one place.

Threads: one per vCPU (register accesses, trapped by KVM), the I/O loop
(kvmlite/eventloop.py: ioeventfd kicks, block completions, network and
console input, timers, and the management actions of kvmlite/vmm/actions.py),
and front-end threads (REST, QMP) that never touch a device: they submit
actions and wait (DESIGN.md rule 5).

Which lock guards what:

1. ``Machine.dev_lock`` (an RLock) guards the PCI root (CONFIG_ADDRESS is
   shared by every vCPU; a config write may move a BAR and with it a bus
   entry and the ioeventfds), every virtio transport, and every virtio
   device: the VMM hands it to each device (``VirtioDevice.use_lock``), so
   the device's own lock *is* this lock and nothing takes two. Taken by
   vCPU threads through ``LockedDevice`` on the buses, and by the I/O loop
   around every kick, completion, received frame and console input.
2. One lock per legacy device (each 16550A, the i8042's two ports, the RTC,
   the ACPI PM block), taken the same way by vCPU threads and by the I/O
   loop (console input into a UART).
3. Leaf locks, held only for a few statements and never while taking
   another lock: interrupt lines (``KvmIrqLine``), the ISR of a transport,
   the GSI router, a network backend's send lock, ``Machine``'s state lock.

Order: a thread may take a leaf lock (3) while it holds a lock of level 1 or
2, never the other way round, and no thread holds two locks of levels 1-2 at
once (a legacy device never calls into a virtio device, nor the reverse).
Pausing parks vCPU threads between exits, where they hold no lock, so an
action that pauses never waits for a thread that waits for it.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import Any, Protocol

#: Any lock (threading.Lock or RLock): what a ``with`` statement takes.
Lock = AbstractContextManager[Any]


class RegisterDevice(Protocol):
    def read(self, offset: int, size: int) -> bytes: ...
    def write(self, offset: int, data: bytes) -> None: ...


class LockedDevice:
    """A bus device whose register accesses take ``lock`` (level 1 or 2 above).

    ``name`` is the wrapped device's, so bus errors and logs name the real
    device, not this wrapper.
    """

    __slots__ = ("device", "lock", "name", "read", "write")

    def __init__(self, device: RegisterDevice, lock: Lock | None = None) -> None:
        self.device = device
        self.lock: Lock = lock if lock is not None else threading.Lock()
        self.name: str = getattr(device, "name", None) or type(device).__name__
        held = self.lock

        def read(offset: int, size: int) -> bytes:
            with held:
                return device.read(offset, size)

        def write(offset: int, data: bytes) -> None:
            with held:
                device.write(offset, data)

        self.read = read
        self.write = write

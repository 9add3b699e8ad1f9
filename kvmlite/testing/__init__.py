"""Public fakes for testing device models without KVM (DESIGN.md "testing/").

* ``MockDriver``: the guest side of a split virtqueue over guest memory.
* ``RecordingInterrupt``: an Interrupt/IrqLine that counts what it was asked.
* ``attach_drivers(device, memory)``: activate a VirtioDevice with MockDrivers.
* ``bytearray_memory(size, gpa=0)``: guest RAM over a fresh bytearray.
"""

from __future__ import annotations

from kvmlite.memory import GuestMemory
from kvmlite.testing.interrupts import RecordingInterrupt
from kvmlite.testing.mock_driver import MockDriver, SubmittedChain, UsedEntry, attach_drivers


def bytearray_memory(size: int, gpa: int = 0) -> GuestMemory:
    """``size`` bytes of zeroed guest RAM at ``gpa``, backed by a bytearray."""
    return GuestMemory.from_buffer(bytearray(size), gpa)


__all__ = [
    "GuestMemory",
    "MockDriver",
    "RecordingInterrupt",
    "SubmittedChain",
    "UsedEntry",
    "attach_drivers",
    "bytearray_memory",
]

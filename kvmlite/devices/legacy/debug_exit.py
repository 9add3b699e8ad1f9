"""Debug-exit port: how a test guest ends the VM with a result.

Modelled on QEMU's ``isa-debug-exit`` device, but with kvmlite's own, simpler
convention for the exit status.

Convention
----------
A 1-, 2- or 4-byte ``out`` of value ``v`` to port 0x501 (``DEBUG_EXIT_PORT``)
ends the VM at once, and ``kvmlite run`` exits with status ``v`` itself
(``debug_exit_status``): ``out 0`` means success (status 0), ``out 3`` gives
status 3. Values above 255, which a process exit status cannot carry, give
status 255. (QEMU's device instead exits with ``(v << 1) | 1``, so that a
guest can never report 0; a guest written for QEMU should be checked for
that.) The device only reports ``v`` through its ``on_exit`` callback; the VMM
owns the process's exit.

Reads return all-ones (nothing to read) and have no effect.
"""

from __future__ import annotations

from collections.abc import Callable

DEBUG_EXIT_PORT = 0x501
#: The port range the device claims (a 4-byte ``outl`` to 0x501 must land).
DEBUG_EXIT_SIZE = 4
#: The exit status used for values a process cannot return.
DEBUG_EXIT_STATUS_OVERFLOW = 255


def debug_exit_status(value: int) -> int:
    """The process exit status for a guest's debug-exit value (see the module docs)."""
    return value if 0 <= value <= 255 else DEBUG_EXIT_STATUS_OVERFLOW


class DebugExit:
    """Calls ``on_exit(value)`` for each write at offset 0 (port 0x501)."""

    name = "debug-exit"

    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit

    def read(self, offset: int, size: int) -> bytes:
        return b"\xff" * size

    def write(self, offset: int, data: bytes) -> None:
        # Only a write that starts at the port counts; a byte write to 0x502
        # (inside the claimed range, for outl's sake) is ignored.
        if offset == 0 and len(data) in (1, 2, 4):
            self._on_exit(int.from_bytes(data, "little"))

"""QEMU's ``isa-debug-exit`` device, with QEMU's meaning of the value.

QEMU (hw/misc/debugexit.c) ends the process with ``exit((v << 1) | 1)`` when
the guest writes ``v`` to the device's ports, so that a guest can never make
QEMU report 0; kvm-unit-tests (lib/x86/io.c ``exit()``: ``outl(code, 0xf4)``)
and its run scripts (scripts/arch-run.bash: status 1 means the test passed)
rely on that. kvm-unit-tests' x86/run places it with
``-device isa-debug-exit,iobase=0xf4,iosize=0x4``.

This model calls ``on_exit(status)`` with the process exit status already
computed (``isa_debug_exit_status``: the low 8 bits of ``(v << 1) | 1``, what
a POSIX exit status keeps). Any write of 1, 2 or 4 bytes anywhere in the
claimed range counts, as in QEMU; reads return all-ones. kvmlite's own
debug-exit port (debug_exit.py, port 0x501, status ``v``) is a different
device and stays as it is.
"""

from __future__ import annotations

from collections.abc import Callable

ISA_DEBUG_EXIT_PORT = 0xF4
ISA_DEBUG_EXIT_SIZE = 4


def isa_debug_exit_status(value: int) -> int:
    """The exit status QEMU gives for a written ``value``: ``((v << 1) | 1) & 0xFF``."""
    return ((value << 1) | 1) & 0xFF


class IsaDebugExit:
    """Calls ``on_exit(status)`` for each guest write (see the module docs)."""

    name = "isa-debug-exit"

    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit

    def read(self, offset: int, size: int) -> bytes:
        return b"\xff" * size

    def write(self, offset: int, data: bytes) -> None:
        if len(data) in (1, 2, 4):
            self._on_exit(isa_debug_exit_status(int.from_bytes(data, "little")))

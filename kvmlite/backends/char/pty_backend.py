"""A console on a new pseudo-terminal (QEMU's ``-serial pty``).

The backend opens a pty pair and tells the user the slave's path (for
``screen /dev/pts/N`` or ``minicom -p``). The slave is set to raw mode so
the line discipline neither echoes guest output back as input nor rewrites
bytes.

The backend keeps its own slave fd open for its whole life: without it the
master reports a hang-up (and reads fail with EIO) whenever no program has
the slave open, which would wake the event loop for nothing. Guest output
written while no program reads the slave goes into the kernel's pty buffer;
once that is full, further output is *dropped* (a serial line with nobody
listening), so the guest never stalls.
"""

from __future__ import annotations

import os
import sys
import tty
from collections.abc import Callable

from kvmlite.backends.char.base import CharBackend

READ_CHUNK = 4096


def _announce_stderr(path: str) -> None:
    print(f"kvmlite: console redirected to {path}", file=sys.stderr)


class PtyBackend(CharBackend):
    def __init__(self, announce: Callable[[str], None] | None = _announce_stderr) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        #: The path a terminal program opens to talk to the guest.
        self.path = os.ttyname(self._slave)
        self._closed = False
        if announce is not None:
            announce(self.path)

    def fileno(self) -> int | None:
        return self._master

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except (BlockingIOError, OSError):
                return  # nobody reading and the buffer is full: drop
            view = view[n:]

    def read_available(self) -> bytes:
        if self._closed:
            return b""
        try:
            return os.read(self._master, READ_CHUNK)
        except (BlockingIOError, OSError):
            return b""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._master)
            os.close(self._slave)

"""The host side of a console: what a serial port or virtio-console talks to.

A backend is deliberately small so that the VMM's epoll loop can drive any
of them the same way:

* ``write(data)`` sends guest output to the host. It never blocks for long:
  a backend whose reader is slow or absent drops or buffers (each says which).
* ``fileno()`` is the fd the loop watches for input (``None``: no input).
  It does not change over the backend's life, so the loop registers it once.
* ``read_available()`` is called when that fd is readable and returns the
  bytes for the guest, possibly none (a socket client came or went, an
  escape key was handled). After end of input it returns ``b""`` and sets
  ``eof``; the loop then stops watching the fd.
* ``close()`` releases everything (the terminal mode, sockets); idempotent.
"""

from __future__ import annotations

import os
import select
from types import TracebackType


class CharBackend:
    """Base class with the do-nothing parts of the interface."""

    #: True once the input side has ended for good.
    eof: bool = False

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def fileno(self) -> int | None:
        return None

    def read_available(self) -> bytes:
        return b""

    def close(self) -> None:
        pass

    def __enter__(self) -> CharBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, retrying short writes.

    An fd that someone else made non-blocking (a terminal shares its file
    description with other programs) is waited on rather than failing.
    """
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]

"""Moving console input from a backend into a device without losing any.

A UART takes at most 16 bytes at a time (``Serial16550.enqueue_input``
returns how many it took), while a paste into the terminal can be kilobytes.
``InputPump`` keeps what the device refused and offers it again when the
device has room (the VMM calls ``offer()`` from the device's ``on_rx_room``
callback, or from a timer). It stops reading the backend while it holds
``limit`` bytes, so a guest that never reads cannot make the host buffer
grow: the kernel's buffers behind the backend's fd then apply back-pressure
(a pasting terminal blocks, a socket client's send waits).

Both calls are meant for the VMM's I/O loop; the device's own lock, if it
has one, is the caller's business.
"""

from __future__ import annotations

from typing import Protocol

from kvmlite.backends.char.base import CharBackend

DEFAULT_LIMIT = 64 * 1024


class InputSink(Protocol):
    """A device that takes host input in bounded amounts (Serial16550, virtio-console)."""

    def enqueue_input(self, data: bytes) -> int: ...

    def wants_input(self) -> bool: ...


class InputPump:
    def __init__(self, backend: CharBackend, sink: InputSink, limit: int = DEFAULT_LIMIT) -> None:
        self.backend = backend
        self.sink = sink
        self.limit = limit
        self._pending = bytearray()

    @property
    def pending(self) -> int:
        """Bytes read from the backend and not yet taken by the device."""
        return len(self._pending)

    def wants_read(self) -> bool:
        """Whether the loop should watch the backend's fd now."""
        return len(self._pending) < self.limit and not self.backend.eof

    def on_readable(self) -> None:
        """The backend's fd is readable: read, then offer to the device."""
        if self.wants_read():
            self._pending += self.backend.read_available()
        self.offer()

    def offer(self) -> int:
        """Give the device as much pending input as it takes; returns the count."""
        taken = 0
        while self._pending and self.sink.wants_input():
            n = self.sink.enqueue_input(bytes(self._pending))
            if n <= 0:
                break
            del self._pending[:n]
            taken += n
        return taken

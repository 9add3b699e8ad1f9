"""The VMM's I/O loop: one thread, epoll, callbacks.

Theory of operation
-------------------
Everything that is not a vCPU runs here: console input, virtio queue
notifications arriving on ioeventfds, block I/O completions, timers, and
actions queued by the management API (DESIGN.md rule 5). Callbacks run on the
loop thread one at a time, so a device touched only from here needs no lock;
devices that vCPU threads also touch (register reads/writes) take their own.

``call_soon`` is the one thread-safe entry point: it appends to a deque and
writes the loop's wake eventfd.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)


class TimerHandle:
    """A pending ``call_later``; ``cancel()`` stops it from running."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    """An epoll loop with readers, timers and thread-safe calls."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, Callable[[], None]] = {}
        self._calls: deque[Callable[[], None]] = deque()
        self._timers: list[tuple[float, int, Callable[[], None], TimerHandle]] = []
        self._seq = itertools.count()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, select.EPOLLIN)
        self._stopping = False
        self.thread: threading.Thread | None = None

    # -- registration (any thread) ------------------------------------------

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the loop thread whenever ``fd`` is readable."""
        self._readers[fd] = callback
        self._epoll.register(fd, select.EPOLLIN)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` on the loop thread as soon as possible."""
        self._calls.append(callback)
        os.eventfd_write(self._wake, 1)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback()`` after ``delay`` seconds. Call from the loop thread."""
        handle = TimerHandle()
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), callback, handle))
        if threading.current_thread() is not self.thread:
            os.eventfd_write(self._wake, 1)
        return handle

    # -- running ----------------------------------------------------------------

    def start(self) -> None:
        """Run the loop on a new daemon thread."""
        self.thread = threading.Thread(target=self.run, name="kvmlite-io", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stopping = True
        os.eventfd_write(self._wake, 1)

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def run(self) -> None:
        if self.thread is None:
            self.thread = threading.current_thread()
        while not self._stopping:
            timeout = -1.0
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            try:
                events = self._epoll.poll(timeout)
            except InterruptedError:
                continue
            for fd, _mask in events:
                if fd == self._wake:
                    try:
                        os.eventfd_read(self._wake)
                    except BlockingIOError:
                        pass
                    continue
                cb = self._readers.get(fd)
                if cb is not None:
                    self._guard(cb)
            while self._calls:
                self._guard(self._calls.popleft())
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, cb, handle = heapq.heappop(self._timers)
                if not handle.cancelled:
                    self._guard(cb)

    def _guard(self, cb: Callable[[], None]) -> None:
        # A failing callback is a bug in one device or backend; log it and keep
        # the other devices (and the guest) running.
        try:
            cb()
        except Exception:
            log.exception("I/O loop callback %r failed", cb)

    def close(self) -> None:
        self.stop()
        self.join(5)
        self._epoll.close()
        os.close(self._wake)

"""The back-end's event loop: a ``selectors`` loop with a wake eventfd.

``VhostUserBackend`` (kvmlite/vhost_user/backend.py) runs on one thread in
this loop: the front-end's socket, ring kicks and the device backends' fds
(kvmlite/vhost_user/wiring.py) are all callbacks here. Other threads reach
it only through ``stop``, ``wake`` and ``call_soon``, which write the wake
eventfd; watches change on the loop's thread (``add_watch``/``remove_watch``).
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger("kvmlite.vhost_user")


class Loop:
    """One thread's selector over callbacks; ``run_loop`` returns after ``stop()``."""

    def __init__(self, watch: Sequence[tuple[int, Callable[[], object]]] = ()) -> None:
        self._watch = list(watch)
        self._sel = selectors.DefaultSelector()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._stopping = False
        self._stop_requested = False
        self._soon: collections.deque[Callable[[], object]] = collections.deque()
        self._soon_lock = threading.Lock()

    def run_loop(self) -> None:
        """Register the wake fd and the watch list, then dispatch until ``stop()``."""
        self._sel.register(self._wake, selectors.EVENT_READ, self._on_wake)
        for fd, cb in self._watch:
            self._sel.register(fd, selectors.EVENT_READ, cb)
        while not self._stopping:
            for key, _ in self._sel.select():
                key.data()
                if self._stopping:
                    break

    def unwatch_all(self) -> None:
        for key in list(self._sel.get_map().values()):
            self._sel.unregister(key.fileobj)

    def close_loop(self) -> None:
        self._sel.close()
        os.close(self._wake)

    def stop(self) -> None:
        """Ask the loop to return (thread-safe)."""
        self._stop_requested = True
        os.eventfd_write(self._wake, 1)

    def wake(self) -> None:
        """Make the loop go round once (thread-safe): fds it watches changed state."""
        os.eventfd_write(self._wake, 1)

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the loop's thread (thread-safe)."""
        with self._soon_lock:
            self._soon.append(fn)
        os.eventfd_write(self._wake, 1)

    def add_watch(self, fd: int, callback: Callable[[], object]) -> None:
        """Watch ``fd`` for readability; call from the loop's thread (or via call_soon).

        Before the loop runs it joins the ``watch`` list; watching an fd
        already watched replaces its callback.
        """
        if not self._sel.get_map():  # not running yet: registered by run_loop
            self._watch = [(f, cb) for f, cb in self._watch if f != fd] + [(fd, callback)]
            return
        try:
            self._sel.modify(fd, selectors.EVENT_READ, callback)
        except KeyError:
            self._sel.register(fd, selectors.EVENT_READ, callback)

    def remove_watch(self, fd: int) -> None:
        """Stop watching ``fd`` (loop thread); unknown fds are ignored."""
        self._watch = [(f, cb) for f, cb in self._watch if f != fd]
        try:
            self._sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def _on_wake(self) -> None:
        try:
            os.eventfd_read(self._wake)
        except BlockingIOError:
            pass
        while True:
            with self._soon_lock:
                if not self._soon:
                    break
                fn = self._soon.popleft()
            try:
                fn()
            except Exception:  # a bug in a device's callback: keep serving
                log.exception("error in a deferred call on the vhost-user loop")
        if self._stop_requested:
            self._stopping = True

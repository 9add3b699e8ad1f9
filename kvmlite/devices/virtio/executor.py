"""Where device I/O runs: inline for tests, or on a pool of I/O threads.

Theory of operation
-------------------
A device hands the executor a *job* (a callable doing blocking host I/O such
as ``backend.readv`` into memoryviews of guest RAM) and a *completion*
(a callable that updates the used ring and interrupts the guest). The job
may run on any thread; the completion always runs on the thread that owns
the device, because it touches the rings:

* ``SyncExecutor`` runs both at once, inline (unit tests, simple tools).
* ``ThreadPoolIoExecutor`` runs jobs on ``workers`` threads
  (``os.preadv``/``os.pwritev`` release the GIL, so they overlap), queues
  finished ones and makes ``completion_fd`` (an eventfd) readable. The VMM's
  I/O loop watches that fd and calls ``run_completions()``.

A completion receives the job's return value, or the exception it raised
(the device turns that into an I/O error status for the guest).
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

Job = Callable[[], Any]
Completion = Callable[[Any], None]


class IoExecutor(Protocol):
    def submit(self, job: Job, completion: Completion) -> None: ...

    def run_completions(self) -> int: ...

    def wait_idle(self, timeout: float | None = None) -> bool: ...


class SyncExecutor:
    """Runs each job and its completion immediately on the caller's thread."""

    completion_fd: int | None = None

    def submit(self, job: Job, completion: Completion) -> None:
        try:
            result: Any = job()
        except Exception as e:  # the device maps it to an I/O error status
            result = e
        completion(result)

    def run_completions(self) -> int:
        return 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        return True


class ThreadPoolIoExecutor:
    """Jobs on a thread pool; completions queued for the owner thread (eventfd)."""

    def __init__(self, workers: int = 4, *, name: str = "kvmlite-io") -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._done: collections.deque[tuple[Completion, Any]] = collections.deque()
        self._pending = 0
        self._cond = threading.Condition()
        #: Readable while completions wait; watch it in the I/O loop.
        self.completion_fd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def submit(self, job: Job, completion: Completion) -> None:
        with self._cond:
            self._pending += 1
        fut = self._pool.submit(job)
        fut.add_done_callback(lambda f: self._finished(f, completion))

    def _finished(self, fut: Future[Any], completion: Completion) -> None:
        exc = fut.exception()
        self._done.append((completion, exc if exc is not None else fut.result()))
        if self.completion_fd is not None:
            os.eventfd_write(self.completion_fd, 1)

    def run_completions(self) -> int:
        """Run queued completions on this thread; returns how many ran."""
        if self.completion_fd is not None:
            try:
                os.eventfd_read(self.completion_fd)
            except BlockingIOError:
                pass
        n = 0
        while self._done:
            completion, result = self._done.popleft()
            try:
                completion(result)
            finally:
                n += 1
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()
        return n

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Run completions until no job is outstanding (before a snapshot, a reset)."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.run_completions()
            with self._cond:
                if self._pending == 0:
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.01 if left is None else min(left, 0.01))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.run_completions()
        if self.completion_fd is not None:
            os.close(self.completion_fd)
            self.completion_fd = None

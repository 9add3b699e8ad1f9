"""Where device I/O runs: inline for tests, or on a pool of I/O threads.

Theory of operation
-------------------
A device hands the executor a *job* (a callable doing blocking host I/O such
as ``backend.readv`` into memoryviews of guest RAM) and a *completion*
(a callable that updates the used ring and interrupts the guest). The job
may run on any thread; the completion always runs on the thread that owns
the device, because it touches the rings:

* ``SyncExecutor`` runs both at once, inline (unit tests, simple tools).
* ``ThreadPoolIoExecutor`` (the ``threads`` I/O engine,
  kvmlite.backends.block.engines.threads) runs jobs on ``workers`` threads
  (``os.preadv``/``os.pwritev`` release the GIL, so they overlap), queues
  finished ones and makes ``completion_fd`` (an eventfd) readable. The VMM's
  I/O loop watches that fd and calls ``run_completions()``. The other
  engines there (``native``: Linux AIO, ``io_uring``) are executors too, and
  do reads and writes on host fds without a thread.

A completion receives the job's return value, or the exception it raised
(the device turns that into an I/O error status for the guest).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from kvmlite.backends.block.engines.threads import ThreadsEngine as ThreadPoolIoExecutor

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


__all__ = ["IoExecutor", "SyncExecutor", "ThreadPoolIoExecutor"]

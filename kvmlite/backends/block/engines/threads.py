"""The ``threads`` engine (QEMU's ``aio=threads``): a pool of blocking I/O threads.

``os.preadv``/``os.pwritev`` into memoryviews of guest RAM are zero-copy and
release the GIL, so ``workers`` of them overlap. A finished job is queued
and ``completion_fd`` (an eventfd) made readable; the owner's I/O loop calls
``run_completions()``. It works on every kernel and every file, buffered or
O_DIRECT; each request pays a hand-off to a thread and back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from kvmlite.backends.block.engines.base import (
    Completion,
    Job,
    JobPool,
    advance,
    drain_eventfd,
    op_length,
    wait_until_idle,
)


def preadv_full(fd: int, offset: int, views: Sequence[memoryview]) -> int:
    """preadv until every view is full; past end of file reads as zeros."""
    total = op_length(views)
    done = 0
    while done < total:
        rest = advance(views, done)
        n = os.preadv(fd, rest, offset + done)
        if n == 0:
            for mv in rest:
                mv[:] = bytes(mv.nbytes)
            break
        done += n
    return total


def pwritev_full(fd: int, offset: int, views: Sequence[memoryview]) -> int:
    total = op_length(views)
    done = 0
    while done < total:
        n = os.pwritev(fd, advance(views, done), offset + done)
        if n == 0:
            raise OSError(28, "short write: no space left")  # ENOSPC
        done += n
    return total


class ThreadsEngine:
    """Jobs on a thread pool; completions queued for the owner thread (eventfd)."""

    name = "threads"

    def __init__(self, workers: int = 4, *, name: str = "kvmlite-io") -> None:
        #: Readable while completions wait; watch it in the I/O loop.
        self.completion_fd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._jobs = JobPool(workers, name, self.completion_fd)

    def submit(self, job: Job, completion: Completion) -> None:
        self._jobs.submit(job, completion)

    def readv(self, fd: int, offset: int, views: Sequence[memoryview], done: Completion) -> None:
        self._jobs.submit(lambda: preadv_full(fd, offset, views), done)

    def writev(self, fd: int, offset: int, views: Sequence[memoryview], done: Completion) -> None:
        self._jobs.submit(lambda: pwritev_full(fd, offset, views), done)

    def fdatasync(self, fd: int, done: Completion) -> None:
        self._jobs.submit(lambda: os.fdatasync(fd), done)

    def commit(self) -> None:
        """Nothing is queued: each request went to a thread at once."""

    def run_completions(self) -> int:
        """Run queued completions on this thread; returns how many ran."""
        drain_eventfd(self.completion_fd)
        return self._jobs.run_completions()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Run completions until no job is outstanding (before a snapshot, a reset)."""
        jobs = self._jobs
        return wait_until_idle(self.run_completions, lambda: jobs.pending > 0, jobs.cond, timeout)

    def close(self) -> None:
        self._jobs.shutdown()
        self.run_completions()
        if self.completion_fd is not None:
            os.close(self.completion_fd)
            self.completion_fd = None

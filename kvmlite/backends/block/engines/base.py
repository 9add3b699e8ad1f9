"""The block I/O engine interface, and what every engine shares.

An engine is where a disk's I/O runs (QEMU's ``aio=``): ``threads`` (a pool
of ``os.preadv``/``os.pwritev`` threads), ``native`` (Linux AIO, io_submit(2))
and ``io_uring`` (io_uring(7)). Devices hand it two kinds of work:

* vectored reads/writes and fdatasync on a host fd at an offset, into
  memoryviews of guest RAM (``readv``/``writev``/``fdatasync``): the kernel
  engines do these without a thread;
* any blocking callable (``submit``: qcow2 metadata, discard, a flush that
  also writes metadata): always on a small thread pool.

Theory of operation
-------------------
Every engine owns one eventfd, ``completion_fd``, that the owner's event loop
watches; the kernel (AIO's IOCB_FLAG_RESFD, io_uring's registered eventfd)
or a pool thread makes it readable when work finishes, and the owner calls
``run_completions()``, which runs each finished request's completion on the
owner's thread. A completion receives the byte count of the whole request
(short transfers are resubmitted for the rest; a read that hits end of file
reads zeros there, like ``RawBackend.readv``) or the exception (an
``OSError`` with the kernel's errno). Reads and writes may be queued and go
to the kernel in one system call at ``commit()``, which the device calls
once per batch of popped descriptor chains. Completions run on the thread
that calls ``run_completions`` (the event loop) or ``commit``; submission may
come from another thread too (a queue kick that took an MMIO exit on a vCPU
thread), so each engine guards its rings and tables with a lock that is never
held while a completion runs (a completion takes the device's lock, and the
device calls the engine with its lock held).
"""

from __future__ import annotations

import collections
import errno
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from kvmlite.errors import KvmliteError

Job = Callable[[], Any]
Completion = Callable[[Any], None]

ENGINES = ("threads", "native", "io_uring")


class EngineUnavailable(KvmliteError):
    """The kernel or a policy (seccomp, sysctl) refuses this I/O engine here."""


class IoEngine(Protocol):
    """What devices use of an engine (virtio-blk, ``kvmlite serve blk``)."""

    name: str
    completion_fd: int | None

    def submit(self, job: Job, completion: Completion) -> None: ...
    def readv(
        self, fd: int, offset: int, views: Sequence[memoryview], done: Completion
    ) -> None: ...
    def writev(
        self, fd: int, offset: int, views: Sequence[memoryview], done: Completion
    ) -> None: ...
    def fdatasync(self, fd: int, done: Completion) -> None: ...
    def commit(self) -> None: ...
    def run_completions(self) -> int: ...
    def wait_idle(self, timeout: float | None = None) -> bool: ...
    def close(self) -> None: ...


def advance(views: Sequence[memoryview], skip: int) -> list[memoryview]:
    """The views with their first ``skip`` bytes dropped (to resubmit a short transfer)."""
    out: list[memoryview] = []
    for mv in views:
        if skip >= mv.nbytes:
            skip -= mv.nbytes
            continue
        out.append(mv[skip:] if skip else mv)
        skip = 0
    return out


@dataclass
class Op:
    """One read, write or fdatasync on its way through a kernel engine."""

    kind: str  # "read" | "write" | "fdatasync"
    fd: int
    offset: int
    views: list[memoryview]
    total: int
    done: Completion
    moved: int = 0  # bytes transferred so far
    #: ctypes objects the kernel reads or writes (iovecs, pinned buffers): kept
    #: alive until the kernel has finished with them.
    keep: list[Any] = field(default_factory=list)

    def finish(self, res: int) -> bool:
        """Account for a kernel result; True when the op is complete (``done`` may run).

        A short read or write leaves the rest to resubmit: ``views`` and
        ``offset`` then describe what is left. A read of 0 bytes is end of
        file (the rest reads as zeros); a write of 0 bytes is ENOSPC.
        """
        if res < 0:
            self.result: Any = OSError(-res, os.strerror(-res))
            return True
        if self.kind == "fdatasync":
            self.result = 0
            return True
        self.moved += res
        if self.moved >= self.total:
            self.result = self.total
            return True
        if res == 0:
            if self.kind == "read":
                for mv in advance(self.views, res):
                    mv[:] = bytes(mv.nbytes)
                self.result = self.total
                return True
            self.result = OSError(errno.ENOSPC, "short write: no space left")
            return True
        self.views = advance(self.views, res)
        self.offset += res
        self.keep = []
        return False


def op_length(views: Sequence[memoryview]) -> int:
    return sum(v.nbytes for v in views)


class JobPool:
    """Blocking jobs on threads; completions queued for the owner thread.

    It signals ``completion_fd`` (an eventfd it may share with a kernel
    engine: an eventfd is a counter, so both can write to it) and keeps the
    count of outstanding jobs for ``wait_idle``.
    """

    def __init__(self, workers: int, name: str, completion_fd: int) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._workers = workers
        self._name = name
        self._fd = completion_fd
        self.done: collections.deque[tuple[Completion, Any]] = collections.deque()
        self.pending = 0
        self.cond = threading.Condition()

    def submit(self, job: Job, completion: Completion) -> None:
        if self._pool is None:  # started on first use: most disks of kernel engines never need it
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix=self._name)
        with self.cond:
            self.pending += 1
        fut = self._pool.submit(job)
        fut.add_done_callback(lambda f: self._finished(f, completion))

    def _finished(self, fut: Future[Any], completion: Completion) -> None:
        exc = fut.exception()
        self.done.append((completion, exc if exc is not None else fut.result()))
        os.eventfd_write(self._fd, 1)

    def run_completions(self) -> int:
        n = 0
        while self.done:
            completion, result = self.done.popleft()
            try:
                completion(result)
            finally:
                n += 1
                with self.cond:
                    self.pending -= 1
                    self.cond.notify_all()
        return n

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def drain_eventfd(fd: int | None) -> None:
    if fd is None:
        return
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        pass


def wait_until_idle(
    run: Callable[[], int],
    busy: Callable[[], bool],
    cond: threading.Condition,
    timeout: float | None,
) -> bool:
    """Run completions until nothing is outstanding; False on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run()
        with cond:
            if not busy():
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            cond.wait(0.01 if left is None else min(left, 0.01))

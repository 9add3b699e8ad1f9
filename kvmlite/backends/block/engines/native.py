"""The ``native`` engine (QEMU's ``aio=native``): Linux AIO, io_submit(2), no threads.

Theory of operation
-------------------
One AIO context (io_setup(2), ``depth`` slots). Reads and writes queue as
``Op``s; ``commit()`` turns the queue into IOCB_CMD_PREADV/PWRITEV iocbs whose
iovecs point straight into guest memory and hands them to the kernel in one
io_submit(2). Every iocb carries IOCB_FLAG_RESFD, so the kernel makes
``completion_fd`` readable when it completes; ``run_completions()`` reaps
with a non-blocking io_getevents(2) and resubmits the rest of a short
transfer. fdatasync goes as IOCB_CMD_FDSYNC; a kernel or filesystem that
answers EINVAL to that gets it (and every later one) on a thread instead.

io_submit answering EAGAIN (the context is full) leaves the queue for the
next reap; with nothing in flight to reap, the op goes to a thread so it
cannot wait forever. Any other errno fails the first iocb of the batch:
its request completes with that error.

Linux AIO is only asynchronous for O_DIRECT files (``direct``). On a
buffered file io_submit does the copy (or the disk read) itself before it
returns, so the event loop waits for it: correct, but no overlap. QEMU
refuses aio=native without cache.direct=on for that reason; kvmlite allows
it and logs one line (see docs/block-engines.md).
"""

from __future__ import annotations

import collections
import ctypes
import errno
import os
import threading
from collections.abc import Sequence
from typing import Any

from kvmlite.backends.block.engines import abi
from kvmlite.backends.block.engines.base import (
    Completion,
    EngineUnavailable,
    Job,
    JobPool,
    Op,
    drain_eventfd,
    op_length,
    wait_until_idle,
)

OPCODES = {"read": abi.IOCB_CMD_PREADV, "write": abi.IOCB_CMD_PWRITEV}


class NativeEngine:
    """Linux AIO with eventfd completion."""

    name = "native"

    def __init__(self, depth: int = 128, workers: int = 4) -> None:
        self.completion_fd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        ctx = ctypes.c_ulong(0)
        try:
            abi.syscall(abi.SYS_io_setup, depth, ctypes.addressof(ctx))
        except OSError as e:
            os.close(self.completion_fd)
            self.completion_fd = None
            raise EngineUnavailable(f"Linux AIO: io_setup: {e.strerror} (errno {e.errno})") from e
        self._ctx = ctx.value
        self._depth = depth
        self._jobs = JobPool(workers, "kvmlite-aio", self.completion_fd)
        self._queue: collections.deque[Op] = collections.deque()
        self._inflight: dict[int, Op] = {}
        self._ready: collections.deque[tuple[Completion, Any]] = collections.deque()
        self._events = (abi.IoEvent * depth)()
        self._zero_timeout = (ctypes.c_long * 2)(0, 0)
        self._next_id = 1
        self.fdsync_supported = True
        #: Guards the context, the queue and the in-flight table: a queue kick can
        #: come from a vCPU thread (a notify write that took an MMIO exit) while
        #: the event loop reaps. Never held while a completion runs.
        self._lock = threading.Lock()

    # -- submission -----------------------------------------------------------------

    def submit(self, job: Job, completion: Completion) -> None:
        self._jobs.submit(job, completion)

    def readv(self, fd: int, offset: int, views: Sequence[memoryview], done: Completion) -> None:
        self._queue.append(Op("read", fd, offset, list(views), op_length(views), done))

    def writev(self, fd: int, offset: int, views: Sequence[memoryview], done: Completion) -> None:
        self._queue.append(Op("write", fd, offset, list(views), op_length(views), done))

    def fdatasync(self, fd: int, done: Completion) -> None:
        if self.fdsync_supported:
            self._queue.append(Op("fdatasync", fd, 0, [], 0, done))
        else:
            self._jobs.submit(lambda: os.fdatasync(fd), done)

    def _iocb(self, op: Op, ident: int) -> abi.Iocb:
        cb = abi.Iocb()
        cb.aio_data = ident
        cb.aio_fildes = op.fd
        cb.aio_flags = abi.IOCB_FLAG_RESFD
        cb.aio_resfd = self.completion_fd or 0
        if op.kind == "fdatasync":
            cb.aio_lio_opcode = abi.IOCB_CMD_FDSYNC
        else:
            op.keep = []
            iov = abi.iovecs(op.views, op.keep)
            cb.aio_lio_opcode = OPCODES[op.kind]
            cb.aio_buf = ctypes.addressof(iov)
            cb.aio_nbytes = len(op.views)
            cb.aio_offset = op.offset
        op.keep.append(cb)
        return cb

    def commit(self) -> None:
        """Hand every queued op to the kernel, one io_submit per batch."""
        with self._lock:
            self._submit()

    def _submit(self) -> None:
        while self._queue and len(self._inflight) < self._depth:
            batch = list(self._queue)[: self._depth - len(self._inflight)]
            ids = []
            ptrs = (ctypes.c_void_p * len(batch))()
            for i, op in enumerate(batch):
                ident = self._next_id
                self._next_id += 1
                ids.append(ident)
                ptrs[i] = ctypes.addressof(self._iocb(op, ident))
            try:
                n = abi.syscall(abi.SYS_io_submit, self._ctx, len(batch), ctypes.addressof(ptrs))
            except OSError as e:
                if not self._refused(e):
                    return  # completions to reap first; run_completions commits again
                continue
            # A short count: the kernel stopped at an iocb; the next call says why.
            for ident in ids[:n]:
                self._inflight[ident] = self._queue.popleft()

    def _refused(self, e: OSError) -> bool:
        """io_submit failed on the first queued iocb; False: retry after a reap."""
        op = self._queue[0]
        if e.errno == errno.EAGAIN:
            if self._inflight:
                return False
            self._queue.popleft()
            self._to_thread(op)
        elif op.kind == "fdatasync" and e.errno == errno.EINVAL:
            self.fdsync_supported = False
            self._queue.popleft()
            self._to_thread(op)
        else:
            self._queue.popleft()
            self._fail(op, e)
        return True

    def _to_thread(self, op: Op) -> None:
        from kvmlite.backends.block.engines.threads import preadv_full, pwritev_full

        fd, off, views = op.fd, op.offset, op.views
        moved = op.moved
        if op.kind == "fdatasync":
            self._jobs.submit(lambda: os.fdatasync(fd), op.done)
        elif op.kind == "read":
            self._jobs.submit(lambda: preadv_full(fd, off, views) + moved, op.done)
        else:
            self._jobs.submit(lambda: pwritev_full(fd, off, views) + moved, op.done)

    def _fail(self, op: Op, e: OSError) -> None:
        self._ready.append((op.done, e))
        os.eventfd_write(self.completion_fd or -1, 1)

    # -- completion -----------------------------------------------------------------

    def _reap(self) -> None:
        while self._inflight:
            n = abi.syscall(
                abi.SYS_io_getevents,
                self._ctx,
                0,
                self._depth,
                ctypes.addressof(self._events),
                ctypes.addressof(self._zero_timeout),
            )
            for ev in self._events[:n]:
                op = self._inflight.pop(ev.data)
                if op.finish(ev.res):
                    self._ready.append((op.done, op.result))
                else:
                    self._queue.appendleft(op)  # the rest of a short transfer
            if n < self._depth:
                return

    def run_completions(self) -> int:
        """Reap finished iocbs and jobs, run their completions here; how many ran."""
        drain_eventfd(self.completion_fd)
        with self._lock:
            self._reap()
            self._submit()
        count = self._jobs.run_completions()
        while self._ready:  # outside the lock: a completion takes the device's lock
            done, result = self._ready.popleft()
            count += 1
            done(result)
        return count

    def _busy(self) -> bool:
        return bool(self._inflight or self._queue or self._ready or self._jobs.pending)

    def wait_idle(self, timeout: float | None = None) -> bool:
        return wait_until_idle(self.run_completions, self._busy, self._jobs.cond, timeout)

    def close(self) -> None:
        if self.completion_fd is None:
            return
        self.wait_idle(10)
        self._jobs.shutdown()
        abi.syscall(abi.SYS_io_destroy, self._ctx)  # waits for anything still in flight
        self._inflight.clear()
        os.close(self.completion_fd)
        self.completion_fd = None

"""The ``io_uring`` engine (QEMU's ``aio=io_uring``): rings mmapped and driven from Python.

io_uring(7), io_uring_setup(2), io_uring_enter(2), io_uring_register(2): no
liburing, no C extension; the rings are ctypes views of the kernel's mmaps.

Theory of operation
-------------------
Setup maps the SQ ring, the CQ ring (one mapping with IORING_FEAT_SINGLE_MMAP)
and the SQE array, fills the SQ index array with the identity (SQE slot i is
array entry i, so slot = tail & mask) and registers ``completion_fd`` with
IORING_REGISTER_EVENTFD: the kernel signals it for every CQE it posts.

``commit()`` fills one SQE per queued op (IORING_OP_READV/WRITEV with iovecs
pointing into guest memory, IORING_OP_FSYNC with IORING_FSYNC_DATASYNC),
publishes the new SQ tail and calls io_uring_enter once for the batch. The
kernel completes page-cache hits inside that call and hands the rest to its
own workers (buffered files) or the block layer (O_DIRECT), so it never
blocks the event loop. ``run_completions()`` reads CQEs from head to tail
with no system call, stores the new head, and resubmits the rest of a
short transfer.

Memory ordering: the kernel reads the SQ tail with acquire and writes the CQ
tail with release. On x86-64 (TSO) plain stores are not reordered with
earlier stores, nor loads with later loads, and CPython executes the
SQE stores, then the tail store, in program order, so ordinary ctypes
stores and loads are enough here; another architecture would need fences.
At most ``cq_entries`` ops are in flight, so the CQ ring cannot overflow.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import mmap
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

OPCODES = {"read": abi.IORING_OP_READV, "write": abi.IORING_OP_WRITEV}
#: io_uring_enter errnos after which the unconsumed SQEs are simply retried.
RETRY_ERRNOS = (errno.EAGAIN, errno.EBUSY, errno.EINTR)


class _Ring:
    """The three mappings and typed views into them."""

    def __init__(self, fd: int, p: abi.IoUringParams) -> None:
        sq_size = p.sq_off.array + p.sq_entries * 4
        cq_size = p.cq_off.cqes + p.cq_entries * ctypes.sizeof(abi.IoUringCqe)
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        self.maps: list[mmap.mmap] = []
        if p.features & abi.IORING_FEAT_SINGLE_MMAP:
            sq = mmap.mmap(fd, max(sq_size, cq_size), flags, prot, offset=abi.IORING_OFF_SQ_RING)
            self.maps.append(sq)
            cq = sq
        else:
            sq = mmap.mmap(fd, sq_size, flags, prot, offset=abi.IORING_OFF_SQ_RING)
            cq = mmap.mmap(fd, cq_size, flags, prot, offset=abi.IORING_OFF_CQ_RING)
            self.maps += [sq, cq]
        sqes = mmap.mmap(
            fd,
            p.sq_entries * ctypes.sizeof(abi.IoUringSqe),
            flags,
            prot,
            offset=abi.IORING_OFF_SQES,
        )
        self.maps.append(sqes)
        u32 = ctypes.c_uint32
        self.sq_head = u32.from_buffer(sq, p.sq_off.head)
        self.sq_tail = u32.from_buffer(sq, p.sq_off.tail)
        self.sq_mask = u32.from_buffer(sq, p.sq_off.ring_mask).value
        self.sq_entries = p.sq_entries
        array = (u32 * p.sq_entries).from_buffer(sq, p.sq_off.array)
        for i in range(p.sq_entries):
            array[i] = i
        del array
        self.sqes = (abi.IoUringSqe * p.sq_entries).from_buffer(sqes)
        self.cq_head = u32.from_buffer(cq, p.cq_off.head)
        self.cq_tail = u32.from_buffer(cq, p.cq_off.tail)
        self.cq_mask = u32.from_buffer(cq, p.cq_off.ring_mask).value
        self.cq_entries = p.cq_entries
        self.cqes = (abi.IoUringCqe * p.cq_entries).from_buffer(cq, p.cq_off.cqes)

    def close(self) -> None:
        # The ctypes views hold buffer exports: drop them before unmapping.
        for name in ("sq_head", "sq_tail", "sqes", "cq_head", "cq_tail", "cqes"):
            delattr(self, name)
        for m in self.maps:
            m.close()


class IoUringEngine:
    """io_uring with an eventfd for completions."""

    name = "io_uring"

    def __init__(self, entries: int = 128, workers: int = 4) -> None:
        self.completion_fd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        p = abi.IoUringParams()
        try:
            self._fd = abi.syscall(abi.SYS_io_uring_setup, entries, ctypes.addressof(p))
        except OSError as e:
            os.close(self.completion_fd)
            self.completion_fd = None
            hint = (
                " (kernel.io_uring_disabled, or a seccomp policy)" if e.errno == errno.EPERM else ""
            )
            raise EngineUnavailable(
                f"io_uring: io_uring_setup: {e.strerror} (errno {e.errno}){hint}"
            ) from e
        try:
            self._ring = _Ring(self._fd, p)
            efd = ctypes.c_int(self.completion_fd)
            abi.syscall(
                abi.SYS_io_uring_register,
                self._fd,
                abi.IORING_REGISTER_EVENTFD,
                ctypes.addressof(efd),
                1,
            )
        except OSError as e:
            os.close(self._fd)
            os.close(self.completion_fd)
            self.completion_fd = None
            raise EngineUnavailable(f"io_uring: setting up the rings: {e}") from e
        self._jobs = JobPool(workers, "kvmlite-uring", self.completion_fd)
        self._queue: collections.deque[Op] = collections.deque()
        self._inflight: dict[int, Op] = {}
        self._next_id = 1
        self._tail = self._ring.sq_tail.value  # our copy: only we write the SQ tail
        self._unsubmitted = 0  # SQEs published but not yet consumed by the kernel
        #: Guards the rings, the queue and the in-flight table: a queue kick can
        #: come from a vCPU thread (a notify write that took an MMIO exit) while
        #: the event loop runs completions. Never held while a completion runs.
        self._lock = threading.Lock()
        #: Complete requests that finished inside io_uring_enter at once, in commit().
        self.inline_completions = True

    # -- submission -----------------------------------------------------------------

    def submit(self, job: Job, completion: Completion) -> None:
        self._jobs.submit(job, completion)

    def readv(self, fd: int, offset: int, views: Sequence[memoryview], done: Completion) -> None:
        self._queue.append(Op("read", fd, offset, list(views), op_length(views), done))

    def writev(self, fd: int, offset: int, views: Sequence[memoryview], done: Completion) -> None:
        self._queue.append(Op("write", fd, offset, list(views), op_length(views), done))

    def fdatasync(self, fd: int, done: Completion) -> None:
        self._queue.append(Op("fdatasync", fd, 0, [], 0, done))

    def _fill(self, sqe: abi.IoUringSqe, op: Op, ident: int) -> None:
        ctypes.memset(ctypes.addressof(sqe), 0, ctypes.sizeof(sqe))
        sqe.fd = op.fd
        sqe.user_data = ident
        if op.kind == "fdatasync":
            sqe.opcode = abi.IORING_OP_FSYNC
            sqe.rw_flags = abi.IORING_FSYNC_DATASYNC
            return
        op.keep = []
        iov = abi.iovecs(op.views, op.keep)
        sqe.opcode = OPCODES[op.kind]
        sqe.addr = ctypes.addressof(iov)
        sqe.len = len(op.views)
        sqe.off = op.offset

    def commit(self) -> None:
        """Publish every queued op (room permitting) and enter the kernel once.

        Requests the kernel finished inside that call (page-cache hits) are
        completed here, on the caller's thread, before it returns.
        """
        with self._lock:
            self._submit()
            ring = self._ring
            inline = self.inline_completions and ring.cq_head.value != ring.cq_tail.value
            ready = self._reap() if inline else []
        self._complete(ready)  # outside the lock: a completion takes the device's lock

    def _submit(self) -> None:
        ring = self._ring
        room = min(
            ring.sq_entries - (self._tail - ring.sq_head.value) % (1 << 32),
            ring.cq_entries - len(self._inflight),
        )
        while self._queue and room > 0:
            op = self._queue.popleft()
            ident = self._next_id
            self._next_id += 1
            self._fill(ring.sqes[self._tail & ring.sq_mask], op, ident)
            self._inflight[ident] = op
            self._tail = (self._tail + 1) & 0xFFFFFFFF
            self._unsubmitted += 1
            room -= 1
        ring.sq_tail.value = self._tail  # after the SQE stores (see "Memory ordering")
        self._enter()

    def _enter(self) -> None:
        if not self._unsubmitted:
            return
        try:
            n = abi.syscall(abi.SYS_io_uring_enter, self._fd, self._unsubmitted, 0, 0, 0, 0)
        except OSError as e:
            if e.errno not in RETRY_ERRNOS:
                raise
            # The SQEs stay in the ring; come back through the event loop.
            os.eventfd_write(self.completion_fd or -1, 1)
            return
        self._unsubmitted -= n

    # -- completion -----------------------------------------------------------------

    def _reap(self) -> list[tuple[Completion, Any]]:
        ring = self._ring
        head = ring.cq_head.value
        tail = ring.cq_tail.value
        ready = []
        while head != tail:
            cqe = ring.cqes[head & ring.cq_mask]
            op = self._inflight.pop(cqe.user_data)
            if op.finish(cqe.res):
                ready.append((op.done, op.result))
            else:
                self._queue.appendleft(op)  # the rest of a short transfer
            head = (head + 1) & 0xFFFFFFFF
        ring.cq_head.value = head
        return ready

    def run_completions(self) -> int:
        """Reap CQEs and finished jobs, run their completions here; how many ran."""
        drain_eventfd(self.completion_fd)
        with self._lock:
            ready = self._reap()
            if self._queue or self._unsubmitted:
                self._submit()
        return self._jobs.run_completions() + self._complete(ready)

    @staticmethod
    def _complete(ready: list[tuple[Completion, Any]]) -> int:
        for done, result in ready:
            done(result)
        return len(ready)

    def _busy(self) -> bool:
        return bool(self._inflight or self._queue or self._jobs.pending)

    def wait_idle(self, timeout: float | None = None) -> bool:
        return wait_until_idle(self.run_completions, self._busy, self._jobs.cond, timeout)

    def close(self) -> None:
        if self.completion_fd is None:
            return
        self.wait_idle(10)
        self._jobs.shutdown()
        self._ring.close()
        os.close(self._fd)  # the kernel cancels and waits for what is left
        self._inflight.clear()
        os.close(self.completion_fd)
        self.completion_fd = None

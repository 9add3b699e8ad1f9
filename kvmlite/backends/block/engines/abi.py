"""Kernel ABI of Linux AIO (<linux/aio_abi.h>) and io_uring (<linux/io_uring.h>), x86-64.

ctypes Structures named after the C structs (tests/backends/block/test_engine_structs.py
checks every size and offset against gcc), the constants the engines use, and
``syscall()``, the one place the engines enter the kernel (tests patch it to
play a kernel that refuses). Syscall numbers are x86-64's
(arch/x86/entry/syscalls/syscall_64.tbl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# -- system calls (x86-64) -----------------------------------------------------------
SYS_io_setup = 206
SYS_io_destroy = 207
SYS_io_getevents = 208
SYS_io_submit = 209
SYS_io_uring_setup = 425
SYS_io_uring_enter = 426
SYS_io_uring_register = 427

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def syscall(nr: int, *args: int) -> int:
    """syscall(2) with integer/pointer arguments; OSError(errno) on failure.

    A ctypes foreign call releases the GIL, so a blocking call (io_getevents
    with a timeout) does not stop the other threads.
    """
    r = _syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(r)


class Iovec(ctypes.Structure):
    """struct iovec (<bits/types/struct_iovec.h>)."""

    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


# -- Linux AIO ----------------------------------------------------------------------
IOCB_CMD_PREAD = 0
IOCB_CMD_PWRITE = 1
IOCB_CMD_FSYNC = 2
IOCB_CMD_FDSYNC = 3
IOCB_CMD_NOOP = 6
IOCB_CMD_PREADV = 7
IOCB_CMD_PWRITEV = 8
IOCB_FLAG_RESFD = 1 << 0


class Iocb(ctypes.Structure):
    """struct iocb (little-endian layout: aio_key before aio_rw_flags)."""

    _fields_ = [
        ("aio_data", ctypes.c_uint64),
        ("aio_key", ctypes.c_uint32),
        ("aio_rw_flags", ctypes.c_int),
        ("aio_lio_opcode", ctypes.c_uint16),
        ("aio_reqprio", ctypes.c_int16),
        ("aio_fildes", ctypes.c_uint32),
        ("aio_buf", ctypes.c_uint64),
        ("aio_nbytes", ctypes.c_uint64),
        ("aio_offset", ctypes.c_int64),
        ("aio_reserved2", ctypes.c_uint64),
        ("aio_flags", ctypes.c_uint32),
        ("aio_resfd", ctypes.c_uint32),
    ]


class IoEvent(ctypes.Structure):
    """struct io_event."""

    _fields_ = [
        ("data", ctypes.c_uint64),
        ("obj", ctypes.c_uint64),
        ("res", ctypes.c_int64),
        ("res2", ctypes.c_int64),
    ]


# -- io_uring -----------------------------------------------------------------------
IORING_OP_NOP = 0
IORING_OP_READV = 1
IORING_OP_WRITEV = 2
IORING_OP_FSYNC = 3
IORING_FSYNC_DATASYNC = 1 << 0
IORING_ENTER_GETEVENTS = 1 << 0
IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_FEAT_NODROP = 1 << 1
IORING_REGISTER_EVENTFD = 4
IORING_UNREGISTER_EVENTFD = 5
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000


class IoSqringOffsets(ctypes.Structure):
    """struct io_sqring_offsets."""

    _fields_ = [
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("dropped", ctypes.c_uint32),
        ("array", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("resv2", ctypes.c_uint64),
    ]


class IoCqringOffsets(ctypes.Structure):
    """struct io_cqring_offsets."""

    _fields_ = [
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("overflow", ctypes.c_uint32),
        ("cqes", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("resv2", ctypes.c_uint64),
    ]


class IoUringParams(ctypes.Structure):
    """struct io_uring_params."""

    _fields_ = [
        ("sq_entries", ctypes.c_uint32),
        ("cq_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("sq_thread_cpu", ctypes.c_uint32),
        ("sq_thread_idle", ctypes.c_uint32),
        ("features", ctypes.c_uint32),
        ("wq_fd", ctypes.c_uint32),
        ("resv", ctypes.c_uint32 * 3),
        ("sq_off", IoSqringOffsets),
        ("cq_off", IoCqringOffsets),
    ]


class IoUringSqe(ctypes.Structure):
    """struct io_uring_sqe (64 bytes); each union is named by the member used here."""

    _fields_ = [
        ("opcode", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("ioprio", ctypes.c_uint16),
        ("fd", ctypes.c_int32),
        ("off", ctypes.c_uint64),
        ("addr", ctypes.c_uint64),
        ("len", ctypes.c_uint32),
        ("rw_flags", ctypes.c_uint32),  # fsync_flags for IORING_OP_FSYNC
        ("user_data", ctypes.c_uint64),
        ("buf_index", ctypes.c_uint16),
        ("personality", ctypes.c_uint16),
        ("splice_fd_in", ctypes.c_int32),
        ("addr3", ctypes.c_uint64),
        ("pad2", ctypes.c_uint64),
    ]


class IoUringCqe(ctypes.Structure):
    """struct io_uring_cqe (16 bytes; no IORING_SETUP_CQE32)."""

    _fields_ = [
        ("user_data", ctypes.c_uint64),
        ("res", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    ]


def iovecs(views: list[memoryview], keep: list[object]) -> ctypes.Array[Iovec]:
    """An iovec array over ``views`` (guest memory, in place), pinning each buffer.

    ``keep`` receives the ctypes objects that hold the buffer exports: while
    they live the memory cannot be unmapped or resized under the kernel.
    """
    arr = (Iovec * len(views))()
    for i, mv in enumerate(views):
        n = mv.nbytes
        if mv.readonly:  # only the kernel reads it: a copy is as good
            buf: ctypes.Array[ctypes.c_char] = (ctypes.c_char * n).from_buffer_copy(mv)
        else:
            buf = (ctypes.c_char * n).from_buffer(mv)
        keep.append(buf)
        arr[i].iov_base = ctypes.addressof(buf)
        arr[i].iov_len = n
    keep.append(arr)
    return arr

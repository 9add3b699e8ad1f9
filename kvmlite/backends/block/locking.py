"""Image locking compatible with QEMU's (block/file-posix.c, "Posix file locking bytes").

Theory of operation
-------------------
QEMU describes what an opener of an image does with open file description
(OFD) byte-range locks, fcntl(2) F_OFD_SETLK, all of them *shared* (F_RDLCK)
so that any number of openers can hold the same byte:

* byte ``100 + i``: "I hold permission i";
* byte ``200 + i``: "I do not let anybody else hold permission i";

where i is the bit number of the block-layer permission (0 consistent read,
1 write, 2 write unchanged, 3 resize).  Before it goes ahead, an opener tests
(F_OFD_GETLK for a write lock) byte ``200 + i`` of each permission it wants
and byte ``100 + i`` of each it does not share: a lock found there is someone
who refuses us, or whom we refuse.

kvmlite takes what QEMU takes for a guest disk (measured with QEMU 7.2 in
/proc/locks): read-write holds 100, 101 and 201 (reads and writes, lets
nobody else write); read-only holds 100 and 201 (reads, lets nobody write),
so readers share an image and a writer has it alone.  ``force_share`` (QEMU's
``force-share``, qemu-img's ``-U``; read-only only) holds 100 and shares
everything: it reads an image another process may be writing.

OFD locks belong to the open file description, not the process, so two opens
of one image inside one kvmlite (``-d x -d x``) refuse each other too; they
go when the fd is closed.  The lock owner is not recorded in an OFD lock
(l_pid is -1), so the error names the holder by looking for the image's
locks in /proc/*/fdinfo (best effort: other users' processes are hidden).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import errno
import fcntl
import os
import re
from collections.abc import Iterator

from kvmlite.errors import ImageError

RAW_LOCK_PERM_BASE = 100
RAW_LOCK_SHARED_BASE = 200

BLK_PERM_CONSISTENT_READ = 0x01
BLK_PERM_WRITE = 0x02
BLK_PERM_WRITE_UNCHANGED = 0x04
BLK_PERM_RESIZE = 0x08
BLK_PERM_ALL = 0x0F
PERM_NAMES = {
    BLK_PERM_CONSISTENT_READ: "consistent read",
    BLK_PERM_WRITE: "write",
    BLK_PERM_WRITE_UNCHANGED: "write unchanged",
    BLK_PERM_RESIZE: "resize",
}


class flock(ctypes.Structure):  # noqa: N801 - the kernel's name (fcntl(2))
    _fields_ = [
        ("l_type", ctypes.c_short),
        ("l_whence", ctypes.c_short),
        ("l_start", ctypes.c_int64),
        ("l_len", ctypes.c_int64),
        ("l_pid", ctypes.c_int32),
    ]


#: Read-only opens in this context share everything (``kvmlite img -U``).
FORCE_SHARE_READS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "force_share_reads", default=False
)


@contextlib.contextmanager
def force_share_reads(on: bool = True) -> Iterator[None]:
    """Within the block, every read-only image open is ``force_share`` (qemu-img's -U)."""
    token = FORCE_SHARE_READS.set(on)
    try:
        yield
    finally:
        FORCE_SHARE_READS.reset(token)


class ImageLockError(ImageError):
    """Another opener of the image refuses what we want, or we refuse it."""


def perms(read_only: bool, force_share: bool = False) -> tuple[int, int]:
    """(permissions held, permissions shared) of a guest disk opened this way."""
    if force_share:
        if not read_only:
            raise ImageError("force-share needs a read-only image (add ro)")
        return BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL
    held = BLK_PERM_CONSISTENT_READ | (0 if read_only else BLK_PERM_WRITE)
    return held, BLK_PERM_ALL & ~BLK_PERM_WRITE


def _bits(mask: int) -> list[int]:
    return [i for i in range(BLK_PERM_ALL.bit_length()) if mask & (1 << i)]


def _ofd(fd: int, cmd: int, l_type: int, start: int) -> flock:
    req = flock(l_type=l_type, l_whence=os.SEEK_SET, l_start=start, l_len=1, l_pid=0)
    return flock.from_buffer_copy(fcntl.fcntl(fd, cmd, bytes(req)))


def _conflicts(fd: int, byte: int) -> bool:
    """Whether another open file description holds a lock on ``byte``."""
    return _ofd(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, byte).l_type != fcntl.F_UNLCK


def lock_image(fd: int, path: str, read_only: bool, force_share: bool = False) -> None:
    """Take QEMU's lock bytes for a guest disk on ``fd``, or raise ImageLockError.

    The locks live as long as the fd's open file description; on refusal the
    bytes taken here are released again.
    """
    held, shared = perms(read_only, force_share)
    mine = [RAW_LOCK_PERM_BASE + i for i in _bits(held)]
    mine += [RAW_LOCK_SHARED_BASE + i for i in _bits(BLK_PERM_ALL & ~shared)]
    try:
        for byte in mine:
            _ofd(fd, fcntl.F_OFD_SETLK, fcntl.F_RDLCK, byte)
        for i in _bits(held):  # someone refuses a permission we want
            if _conflicts(fd, RAW_LOCK_SHARED_BASE + i):
                raise _refusal(fd, path, RAW_LOCK_SHARED_BASE + i, f'"{PERM_NAMES[1 << i]}"')
        for i in _bits(BLK_PERM_ALL & ~shared):  # someone holds what we do not share
            if _conflicts(fd, RAW_LOCK_PERM_BASE + i):
                raise _refusal(fd, path, RAW_LOCK_PERM_BASE + i, f'shared "{PERM_NAMES[1 << i]}"')
    except OSError as e:
        _unlock(fd, mine)
        if e.errno in (errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP):
            raise ImageLockError(
                f"{path}: the filesystem does not support OFD locks ({e.strerror});"
                " add locking=off to use the image without locking"
            ) from None
        raise ImageLockError(f"{path}: cannot lock the image: {e.strerror}") from None
    except ImageLockError:
        _unlock(fd, mine)
        raise


def create_locked(path: str) -> int:
    """Create (or empty) an image file read-write, locked first (``img create``).

    The file is truncated only once the write lock is ours, so creating over
    an image a running VM uses is refused instead of emptying it.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ImageError(f"{path}: cannot create: {e.strerror}") from None
    try:
        lock_image(fd, path, read_only=False)
        os.ftruncate(fd, 0)
    except OSError as e:
        os.close(fd)
        raise ImageError(f"{path}: cannot create: {e.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock(fd: int, bytes_: list[int]) -> None:
    for byte in bytes_:
        try:
            _ofd(fd, fcntl.F_OFD_SETLK, fcntl.F_UNLCK, byte)
        except OSError:
            pass


def _refusal(fd: int, path: str, byte: int, what: str) -> ImageLockError:
    holders = lock_holders(fd, byte)
    who = ", ".join(holders) if holders else "another process"
    writing = byte in (RAW_LOCK_PERM_BASE + 1, RAW_LOCK_SHARED_BASE + 1)
    hint = "it is being written (or kept from writers) by" if writing else "its locks are held by"
    return ImageLockError(
        f"{path}: failed to get {what} lock: {hint} {who}. Stop that user of the image;"
        " to read it anyway use force-share (-d PATH,ro,force-share; kvmlite img -U),"
        " or take no lock with locking=off if you know better"
    )


_LOCK_LINE = re.compile(r"lock:\s+\d+: OFDLCK\s+\S+\s+\S+\s+-?\d+ (\S+) (\d+) (\d+|EOF)")


def lock_holders(fd: int, byte: int) -> list[str]:
    """'process PID (COMM)' of each process with an OFD lock on ``byte`` of fd's file."""
    st = os.fstat(fd)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    me = os.getpid()
    found: list[str] = []
    for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
        if _holds(pid, ident, byte, fd if pid == me else None):
            try:
                with open(f"/proc/{pid}/comm") as fh:
                    comm = fh.read().strip()
            except OSError:
                comm = "?"
            found.append("this process" if pid == me else f"process {pid} ({comm})")
    return found


def _holds(pid: int, ident: str, byte: int, skip_fd: int | None) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return False
    for name in fds:
        if skip_fd is not None and name == str(skip_fd):
            continue
        try:
            with open(f"/proc/{pid}/fdinfo/{name}") as fh:
                text = fh.read()
        except OSError:
            continue
        for m in _LOCK_LINE.finditer(text):
            end = m.group(3)
            if m.group(1) == ident and int(m.group(2)) <= byte <= (
                1 << 63 if end == "EOF" else int(end)
            ):
                return True
    return False

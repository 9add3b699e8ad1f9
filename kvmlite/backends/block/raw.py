"""Raw disk images: regular files (sparse, via SEEK_HOLE/SEEK_DATA) and block devices.

Data goes straight between the file and the caller's memoryviews with
``os.preadv``/``os.pwritev`` (zero copy, GIL released). Holes are punched with
``fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`` (fallocate(2)); where the
filesystem or device refuses, zeros are written instead.

Probing safety (as QEMU does): a raw image whose format was *guessed* must not
let the guest write a qcow2 magic into sector 0, or the next start would
mistake the disk for a qcow2 image and follow its "header" into host files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import stat
from collections.abc import Callable, Iterator, Sequence

from kvmlite.backends.block.base import BlockBackend, Extent, iov_length
from kvmlite.backends.block.locking import FORCE_SHARE_READS, lock_image
from kvmlite.errors import ImageError

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
QCOW2_MAGIC = b"QFI\xfb"
_ZERO_CHUNK = bytes(1 << 20)
#: The largest file size off_t can express.
MAX_FILE_SIZE = (1 << 63) - 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
_libc.fallocate.restype = ctypes.c_int


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate a range keeping the file size; False if unsupported here."""
    if _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV):
        return False
    raise OSError(err, os.strerror(err))


def pwrite_zeros(fd: int, offset: int, length: int) -> None:
    """Write literal zeros (the fallback when holes cannot be punched)."""
    end = offset + length
    while offset < end:
        n = os.pwrite(fd, memoryview(_ZERO_CHUNK)[: min(len(_ZERO_CHUNK), end - offset)], offset)
        offset += n


def open_fd(
    path: str,
    read_only: bool,
    direct: bool = False,
    *,
    locking: bool = True,
    force_share: bool = False,
) -> int:
    """Open an image file and lock it like QEMU (kvmlite/backends/block/locking.py).

    OS errors become ImageErrors that say what to do; ``locking=False`` takes
    no lock (QEMU's ``file.locking=off``).
    """
    flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
    if direct:
        flags |= os.O_DIRECT
    if force_share and not read_only:
        raise ImageError(f"{path}: force-share needs a read-only image (add ro)")
    fd = _open(path, flags, read_only, direct)
    if locking:
        force_share = force_share or (read_only and FORCE_SHARE_READS.get())
        try:
            lock_image(fd, path, read_only, force_share)
        except BaseException:
            os.close(fd)
            raise
    return fd


def _open(path: str, flags: int, read_only: bool, direct: bool) -> int:
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise ImageError(f"{path}: disk image not found; check the path") from None
    except PermissionError:
        hint = "" if read_only else " (open it read-only, or fix its permissions)"
        raise ImageError(f"{path}: permission denied{hint}") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not a disk image") from None
    except OSError as e:
        if direct and e.errno == errno.EINVAL:
            raise ImageError(
                f"{path}: the filesystem does not support O_DIRECT; "
                "drop direct=on (cache=none) for this image"
            ) from None
        raise ImageError(f"{path}: cannot open: {e.strerror}") from None


class RawBackend(BlockBackend):
    """A raw image: guest offset N is byte N of the file or device."""

    format_name = "raw"

    def __init__(
        self,
        path: str,
        read_only: bool = False,
        direct: bool = False,
        probed: bool = False,
        *,
        locking: bool = True,
        force_share: bool = False,
    ) -> None:
        self.filename = path
        self.read_only = read_only
        self.direct = direct
        self._probed = probed
        # RWF_NOWAIT support, found out on first use (per direction: ext4,
        # for one, takes it for buffered reads but not for buffered writes).
        self._nowait_unsupported = {"read": False, "write": False}
        self._fd = open_fd(path, read_only, direct, locking=locking, force_share=force_share)
        self._closed = False
        st = os.fstat(self._fd)
        self._is_blockdev = stat.S_ISBLK(st.st_mode)
        if not (self._is_blockdev or stat.S_ISREG(st.st_mode)):
            os.close(self._fd)
            raise ImageError(f"{path}: not a regular file or block device; cannot use it as a disk")
        # lseek(SEEK_END) works for regular files and block devices alike.
        self.size = os.lseek(self._fd, 0, os.SEEK_END)

    def fileno(self) -> int:
        return self._fd

    def io_target(self, offset: int, length: int, write: bool) -> tuple[int, int] | None:
        """Guest offset N is file offset N; writes to sector 0 of a probed image and
        writes to a read-only one take ``writev`` (its checks), never an engine."""
        self._check_range(offset, length)
        if write and (self.read_only or (self._probed and offset < 512)):
            return None
        return self._fd, offset

    def flush_target(self) -> int | None:
        return None if self.read_only else self._fd

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int:
        total = iov_length(bufs)
        self._check_range(offset, total)
        done = 0
        while done < total:
            n = os.preadv(self._fd, _advance(bufs, done), offset + done)
            if n == 0:
                # A file that shrank under us: the rest reads as zeros.
                for mv in _advance(bufs, done):
                    mv[:] = bytes(len(mv))
                break
            done += n
        return total

    def readv_nowait(self, offset: int, bufs: Sequence[memoryview]) -> int | None:
        """preadv with RWF_NOWAIT: all from the page cache at once, or None."""
        if self.direct or self._nowait_unsupported["read"]:
            return None
        total = iov_length(bufs)
        self._check_range(offset, total)
        n = self._nowait("read", lambda: os.preadv(self._fd, bufs, offset, os.RWF_NOWAIT))
        # A short read means part of the range was not cached (or past EOF):
        # let the blocking path redo the whole request; reading twice is harmless.
        return total if n == total else None

    def _nowait(self, kind: str, io: Callable[[], int]) -> int | None:
        """Run an RWF_NOWAIT call: its count, or None if it would block or the
        filesystem does not take RWF_NOWAIT for ``kind`` (then never again)."""
        try:
            return io()
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._nowait_unsupported[kind] = True
                return None
            raise

    def writev_nowait(self, offset: int, bufs: Sequence[bytes | memoryview]) -> int | None:
        """pwritev with RWF_NOWAIT (buffered writes that need no I/O), or None."""
        if self.direct or self._nowait_unsupported["write"] or self.read_only:
            return None
        total = iov_length(bufs)
        self._check_range(offset, total)
        if self._probed and offset < 512 and total:
            return None  # the sector-0 magic check belongs to the full path
        n = self._nowait("write", lambda: os.pwritev(self._fd, bufs, offset, os.RWF_NOWAIT))
        if n is None:
            return None
        if n == total:
            return total
        # Part of it went in: finish the rest the blocking way, on this thread
        # (rare: only when the page cache filled up in the middle).
        return self.writev(offset, bufs)

    def writev(self, offset: int, bufs: Sequence[bytes | memoryview]) -> int:
        self._check_writable()
        total = iov_length(bufs)
        self._check_range(offset, total)
        if self._probed and offset < 512 and total:
            self._refuse_magic_in_sector0(offset, bufs)
        done = 0
        while done < total:
            done += os.pwritev(self._fd, _advance(bufs, done), offset + done)
        return total

    def _refuse_magic_in_sector0(self, offset: int, bufs: Sequence[bytes | memoryview]) -> None:
        # One page-aligned block: O_DIRECT refuses an unaligned buffer or length.
        block = mmap.mmap(-1, 4096)
        try:
            n = os.preadv(self._fd, [block], 0)
            head = bytearray(block[: min(4, n)])
        finally:
            block.close()
        data = b"".join(bytes(memoryview(b).cast("B")) for b in bufs)[: max(0, 4 - offset)]
        head[offset : offset + len(data)] = data
        if bytes(head[:4]) == QCOW2_MAGIC:
            raise OSError(
                errno.EPERM,
                f"{self.filename}: refusing to write a qcow2 header into a raw image whose "
                "format was probed; pass format=raw to allow it",
            )

    def flush(self) -> None:
        if not self.read_only:
            os.fdatasync(self._fd)

    def discard(self, offset: int, length: int) -> None:
        self.write_zeroes(offset, length, unmap=True)

    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None:
        self._check_writable()
        self._check_range(offset, length)
        if length == 0:
            return
        # Punching keeps the file size, so it also serves unmap=False on files:
        # reads of a hole are zeros either way.
        if not self._is_blockdev and punch_hole(self._fd, offset, length):
            return
        pwrite_zeros(self._fd, offset, length)

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        if length is None:
            length = self.size - offset
        self._check_range(offset, length)
        end = offset + length
        pos = offset
        while pos < end:
            try:
                data = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # no data after pos: a hole to EOF
                    data = end
                elif e.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                    yield Extent(pos, end - pos, True, False, 0, pos, filename=self.filename)
                    return
                else:
                    raise
            data = min(data, end)
            if data > pos:
                yield Extent(pos, data - pos, False, True, 0, None, filename=self.filename)
                pos = data
                continue
            try:
                hole = min(os.lseek(self._fd, pos, os.SEEK_HOLE), end)
            except OSError:
                hole = end
            hole = max(hole, pos + 1) if hole <= pos else hole
            yield Extent(pos, hole - pos, True, False, 0, pos, filename=self.filename)
            pos = hole

    def truncate(self, size: int) -> None:
        """Resize a raw file (``kvmlite img resize``)."""
        self._check_writable()
        if self._is_blockdev:
            raise ImageError(f"{self.filename}: cannot resize a block device")
        if not 0 <= size <= MAX_FILE_SIZE:
            raise ImageError(
                f"{self.filename}: cannot resize to {size} bytes: a file holds at most"
                f" {MAX_FILE_SIZE} bytes (8 EiB - 1)"
            )
        try:
            os.ftruncate(self._fd, size)
        except OSError as e:
            hint = " (more than this filesystem allows)" if e.errno == errno.EFBIG else ""
            raise ImageError(
                f"{self.filename}: cannot resize to {size} bytes: {e.strerror}{hint}"
            ) from None
        self.size = size

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.close(self._fd)


def _advance(bufs: Sequence[bytes | memoryview], skip: int) -> list[memoryview]:
    """The buffer list with its first ``skip`` bytes dropped (for short preadv/pwritev)."""
    out: list[memoryview] = []
    for b in bufs:
        mv = memoryview(b).cast("B") if not isinstance(b, memoryview) or b.format != "B" else b
        if skip >= mv.nbytes:
            skip -= mv.nbytes
            continue
        out.append(mv[skip:] if skip else mv)
        skip = 0
    return out

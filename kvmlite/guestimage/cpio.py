"""A writer for "newc" cpio archives, the format of the Linux initramfs.

Follows the kernel's Documentation/driver-api/early-userspace/buffer-format.rst:
each member is a 110-byte ASCII header (magic ``070701`` and thirteen 8-digit
hex fields), the NUL-terminated name padded so that header + name is a
multiple of 4 bytes, then the data padded to a multiple of 4. The archive
ends with a member named ``TRAILER!!!``. Archives are written uncompressed:
decompression in the guest is slow on an emulated KVM (TEST-HOST.md).

The kernel's unpacker (init/initramfs.c) creates each member with the
equivalent of open/mkdir/mknod/symlink in the order given, so a parent
directory must come before what it holds; the writer enforces that and
rejects anything the kernel would mangle (bad names, device numbers that do
not fit its dev_t, duplicates) with a CpioError instead of writing it.
Output is deterministic (inode numbers count from 1, a fixed mtime), so an
archive's bytes can serve as a cache key.
"""

from __future__ import annotations

import stat
from types import TracebackType
from typing import BinaryIO

from kvmlite.errors import ImageError

NEWC_MAGIC = b"070701"
NEWC_HEADER_SIZE = 110
TRAILER_NAME = "TRAILER!!!"
# PATH_MAX in the kernel counts the terminating NUL.
PATH_MAX = 4096
# The kernel builds dev_t with MKDEV(): 12 bits of major, 20 of minor.
MAX_MAJOR = (1 << 12) - 1
MAX_MINOR = (1 << 20) - 1
_U32 = (1 << 32) - 1


class CpioError(ImageError):
    """A member that cannot go into an initramfs archive as asked."""


def _align4(n: int) -> int:
    return (4 - n % 4) % 4


def _check_u32(what: str, value: int, limit: int = _U32) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise CpioError(f"{what} must be an integer in 0..{limit}, got {value!r}")
    return value


def _check_name(name: str) -> bytes:
    if not isinstance(name, str):
        raise CpioError(f"member name must be a str, got {type(name).__name__}")
    if name.startswith("/"):
        raise CpioError(f"member name {name!r} must be relative (write 'dev/console')")
    parts = name.split("/")
    if name == "" or any(p in ("", ".", "..") for p in parts):
        raise CpioError(
            f"member name {name!r} must be a plain relative path: no empty, '.' or '..'"
        )
    if "\0" in name:
        raise CpioError(f"member name {name!r} contains a NUL byte")
    if name == TRAILER_NAME:
        raise CpioError(f"member name {name!r} is reserved for the archive trailer")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CpioError(f"member name {name!r} is not valid UTF-8: {e}") from None
    if len(raw) + 1 > PATH_MAX:
        raise CpioError(f"member name is {len(raw)} bytes; the kernel takes at most {PATH_MAX - 1}")
    return raw


class NewcWriter:
    """Write a newc archive to a binary stream, member by member.

    Use as a context manager, or call close() to write the trailer.
    """

    def __init__(self, out: BinaryIO, *, mtime: int = 0) -> None:
        self._out = out
        self._mtime = _check_u32("mtime", mtime)
        self._next_ino = 1
        self._names: dict[str, int] = {}  # name -> file type bits
        self._closed = False

    # -- public members -------------------------------------------------

    def directory(self, name: str, mode: int = 0o755, *, uid: int = 0, gid: int = 0) -> None:
        self._member(name, stat.S_IFDIR, mode, b"", uid, gid, nlink=2)

    def file(
        self, name: str, data: bytes, mode: int = 0o644, *, uid: int = 0, gid: int = 0
    ) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CpioError(f"data of {name!r} must be bytes, got {type(data).__name__}")
        self._member(name, stat.S_IFREG, mode, bytes(data), uid, gid)

    def symlink(self, name: str, target: str, *, uid: int = 0, gid: int = 0) -> None:
        if not isinstance(target, str) or target == "" or "\0" in target:
            raise CpioError(f"symlink {name!r}: target must be a non-empty str without NUL")
        raw = target.encode("utf-8", "strict")
        if len(raw) + 1 > PATH_MAX:
            raise CpioError(f"symlink {name!r}: target longer than {PATH_MAX - 1} bytes")
        # The kernel reads the target from the member's data, without a NUL.
        self._member(name, stat.S_IFLNK, 0o777, raw, uid, gid)

    def char_device(
        self, name: str, major: int, minor: int, mode: int = 0o600, *, uid: int = 0, gid: int = 0
    ) -> None:
        self._member(name, stat.S_IFCHR, mode, b"", uid, gid, rdev=self._rdev(major, minor))

    def block_device(
        self, name: str, major: int, minor: int, mode: int = 0o600, *, uid: int = 0, gid: int = 0
    ) -> None:
        self._member(name, stat.S_IFBLK, mode, b"", uid, gid, rdev=self._rdev(major, minor))

    def fifo(self, name: str, mode: int = 0o644, *, uid: int = 0, gid: int = 0) -> None:
        self._member(name, stat.S_IFIFO, mode, b"", uid, gid)

    def close(self) -> None:
        """Write the trailer. Further members are refused."""
        if self._closed:
            return
        self._write_record(
            TRAILER_NAME.encode(),
            ino=0,
            mode=0,
            uid=0,
            gid=0,
            nlink=1,
            mtime=0,
            data=b"",
            rdev=(0, 0),
        )
        self._closed = True

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def __enter__(self) -> NewcWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()

    # -- internals ------------------------------------------------------

    @staticmethod
    def _rdev(major: int, minor: int) -> tuple[int, int]:
        return _check_u32("device major", major, MAX_MAJOR), _check_u32(
            "device minor", minor, MAX_MINOR
        )

    def _member(
        self,
        name: str,
        ftype: int,
        mode: int,
        data: bytes,
        uid: int,
        gid: int,
        *,
        nlink: int = 1,
        rdev: tuple[int, int] = (0, 0),
    ) -> None:
        if self._closed:
            raise CpioError(f"cannot add {name!r}: the archive is already closed")
        raw = _check_name(name)
        _check_u32(f"mode of {name!r}", mode, 0o7777)
        _check_u32(f"uid of {name!r}", uid)
        _check_u32(f"gid of {name!r}", gid)
        if len(data) > _U32:
            raise CpioError(f"{name!r} is larger than 4 GiB, which newc cannot record")
        if name in self._names:
            raise CpioError(f"{name!r} is already in the archive")
        parent = name.rpartition("/")[0]
        if parent and self._names.get(parent) != stat.S_IFDIR:
            raise CpioError(f"{name!r}: add its parent directory {parent!r} first")
        ino = self._next_ino
        self._next_ino += 1
        self._write_record(
            raw,
            ino=ino,
            mode=ftype | mode,
            uid=uid,
            gid=gid,
            nlink=nlink,
            mtime=self._mtime,
            data=data,
            rdev=rdev,
        )
        self._names[name] = ftype

    def _write_record(
        self,
        raw_name: bytes,
        *,
        ino: int,
        mode: int,
        uid: int,
        gid: int,
        nlink: int,
        mtime: int,
        data: bytes,
        rdev: tuple[int, int],
    ) -> None:
        fields = (
            ino, mode, uid, gid, nlink, mtime, len(data),
            0, 0,  # c_maj, c_min: the device holding the file; none here
            rdev[0], rdev[1],
            len(raw_name) + 1, 0,  # c_namesize counts the NUL; c_check is 0 for newc
        )  # fmt: skip
        header = NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)
        assert len(header) == NEWC_HEADER_SIZE
        name_part = raw_name + b"\0"
        self._out.write(header + name_part + b"\0" * _align4(NEWC_HEADER_SIZE + len(name_part)))
        if data:
            self._out.write(data)
            self._out.write(b"\0" * _align4(len(data)))

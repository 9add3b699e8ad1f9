"""The two ways kvmlite issues an ioctl, and the error every failed one becomes.

``fcntl.ioctl`` releases the GIL for an integer or no argument and for a buffer of at most
1024 bytes; for a larger mutable buffer it passes it in place and keeps the GIL, which is
fine for the quick state ioctls (DESIGN.md, "Threads, the GIL and ioctls"). An integer
argument above the C int range overflows there, so those few go through libc via ctypes.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
from typing import Any

from kvmlite.errors import KvmError
from kvmlite.kvm.ioctls import ALL

_NAMES: dict[int, str] = {}
for _name, _code in ALL.items():
    _NAMES.setdefault(_code, _name)

_libc = ctypes.CDLL(None, use_errno=True)
_libc_ioctl = _libc.ioctl
_libc_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
_libc_ioctl.restype = ctypes.c_int


class KvmIoctlError(KvmError):
    """A KVM ioctl failed; ``ioctl`` is its C name and ``errno`` the error number."""

    def __init__(self, code: int, errno: int, what: str = "") -> None:
        self.ioctl = _NAMES.get(code, f"ioctl {code:#x}")
        self.errno = errno
        detail = f" ({what})" if what else ""
        super().__init__(
            f"{self.ioctl}{detail} failed: {os.strerror(errno)} (errno {errno}); "
            "the host KVM refused the request"
        )


def ioctl(fd: int, code: int, arg: Any = None, what: str = "") -> int:
    """ioctl(fd, code[, arg]) through fcntl; a ctypes ``arg`` is updated in place."""
    if fd < 0:
        raise KvmError(f"{_NAMES.get(code, hex(code))} on a closed KVM file descriptor")
    try:
        if arg is None:
            return fcntl.ioctl(fd, code)
        return fcntl.ioctl(fd, code, arg)
    except OSError as e:
        raise KvmIoctlError(code, e.errno or 0, what) from e


def ioctl_ulong(fd: int, code: int, value: int, what: str = "") -> int:
    """ioctl with an unsigned long argument of any size (e.g. KVM_SET_TSS_ADDR 0xfffbd000)."""
    ret = _libc_ioctl(fd, code, value)
    if ret < 0:
        raise KvmIoctlError(code, ctypes.get_errno(), what)
    return ret

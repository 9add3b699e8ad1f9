"""Record this host's KVM_GET_SUPPORTED_CPUID as test data (run as a script, needs /dev/kvm).

Usage: .venv/bin/python tests/arch/x86/data/record_supported_cpuid.py > supported_cpuid.json

A standalone ctypes ioctl (Documentation/virt/kvm/api.rst 4.46), so the
recording does not depend on the code under test.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import platform
import sys

KVMIO = 0xAE
MAX_ENTRIES = 256


class Entry(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_uint32) for n in ("function", "index", "flags", "eax", "ebx", "ecx", "edx")
    ] + [("pad", ctypes.c_uint32 * 3)]


class Cpuid2(ctypes.Structure):
    _fields_ = [
        ("nent", ctypes.c_uint32),
        ("padding", ctypes.c_uint32),
        ("entries", Entry * MAX_ENTRIES),
    ]


def iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (KVMIO << 8) | nr


def main() -> None:
    fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    buf = Cpuid2(nent=MAX_ENTRIES)
    fcntl.ioctl(fd, iowr(0x05, 8), buf)  # KVM_GET_SUPPORTED_CPUID
    os.close(fd)
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")
            if ln.startswith("model name")
        ),
        "?",
    )
    entries = [
        {f: getattr(e, f) for f in ("function", "index", "flags", "eax", "ebx", "ecx", "edx")}
        for e in buf.entries[: buf.nent]
    ]
    json.dump(
        {"host": f"{cpu}; Linux {platform.release()}", "entries": entries}, sys.stdout, indent=1
    )
    print()


if __name__ == "__main__":
    main()

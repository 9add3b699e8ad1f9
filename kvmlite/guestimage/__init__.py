"""kvmlite's default guest: a minimal Linux kernel and an initramfs.

``default_guest()`` returns a kernel built from Debian's linux-source-6.1
with ``minimal.config`` and ``patches/`` (kernel.py) and a busybox
initramfs (initramfs.py), building whatever the cache lacks. The first
call takes minutes (the kernel build); later calls return at once.
``check_guest()`` is the same kernel with tests/guests/linux/check_init.c
as /init, for boot tests that read a machine-readable report.

On the development machines' emulated "PVM" KVM, the recommended command
line carries hostquirks.PVM_HOST_CMDLINE; on any other host it does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kvmlite.guestimage.cache import default_cache_dir
from kvmlite.guestimage.hostquirks import PVM_HOST_CMDLINE, pvm_host_detected
from kvmlite.guestimage.initramfs import (
    READY_BANNER,
    SHELL_PROMPT,
    build_busybox_initramfs,
    build_single_init_initramfs,
)
from kvmlite.guestimage.kernel import KernelImages, build_kernel
from kvmlite.guestimage.programs import GUEST_SOURCES, compile_static

__all__ = [
    "BASE_CMDLINE",
    "CHECK_DONE",
    "PVM_HOST_CMDLINE",
    "READY_BANNER",
    "SHELL_PROMPT",
    "DefaultGuest",
    "KernelImages",
    "build_kernel",
    "check_guest",
    "default_guest",
    "guest_cmdline",
]

# ttyS0 is the 8250 every kvmlite machine has; panic=-1 turns a guest panic
# into a reset that the VMM sees instead of a hang.
BASE_CMDLINE = "console=ttyS0 panic=-1"
CHECK_DONE = "KVMLITE-CHECK-DONE"


@dataclass(frozen=True)
class DefaultGuest:
    """What a VMM needs to boot the default guest."""

    vmlinux: Path
    bzimage: Path
    initrd: Path
    cmdline: str
    kernel_version: str


def guest_cmdline(extra: str = "", *, host_quirks: bool | None = None) -> str:
    """BASE_CMDLINE, then PVM_HOST_CMDLINE when ``host_quirks`` (default:
    when this host is the PVM one), then ``extra``."""
    if host_quirks is None:
        host_quirks = pvm_host_detected()
    parts = [BASE_CMDLINE, PVM_HOST_CMDLINE if host_quirks else "", extra]
    return " ".join(p for p in parts if p)


def default_guest(progress: bool = True, cache_dir: Path | None = None) -> DefaultGuest:
    """The kernel and the busybox initramfs, built if missing."""
    cache = cache_dir or default_cache_dir()
    kernel = build_kernel(cache, progress=progress)
    initrd = build_busybox_initramfs(cache / "initramfs" / "busybox.cpio")
    return DefaultGuest(kernel.vmlinux, kernel.bzimage, initrd, guest_cmdline(), kernel.version)


def check_guest(progress: bool = True, cache_dir: Path | None = None) -> DefaultGuest:
    """The kernel with check_init as /init (see tests/guests/linux/check_init.c)."""
    cache = cache_dir or default_cache_dir()
    kernel = build_kernel(cache, progress=progress)
    init = compile_static(GUEST_SOURCES / "check_init.c", cache)
    initrd = build_single_init_initramfs(init, cache / "initramfs" / "check_init.cpio")
    return DefaultGuest(kernel.vmlinux, kernel.bzimage, initrd, guest_cmdline(), kernel.version)

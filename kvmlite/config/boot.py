"""The boot source: kernel, initrd and command line (Firecracker's ``boot-source``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kvmlite.errors import ConfigError


def check_readable_file(what: str, path: Path) -> None:
    """A clear error unless ``path`` is a readable regular file (rule 7)."""
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{what} {path} is not readable (permission denied)")


@dataclass(frozen=True)
class BootSource:
    """``kernel`` None boots kvmlite's default guest (built on first use)."""

    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""

    def __post_init__(self) -> None:
        if self.initrd is not None and self.kernel is None:
            raise ConfigError("an initrd (-i) needs a kernel (-k)")
        if "\0" in self.cmdline:
            raise ConfigError("the kernel command line may not contain a NUL byte")

    def check_host(self, memory: int) -> None:
        for what, path in (("kernel", self.kernel), ("initrd", self.initrd)):
            if path is not None:
                check_readable_file(what, path)
        if self.initrd is not None and self.initrd.stat().st_size >= memory:
            raise ConfigError(
                f"initrd {self.initrd} ({self.initrd.stat().st_size >> 20} MiB) does not fit "
                f"in {memory >> 20} MiB of guest memory: give the guest more with -m"
            )

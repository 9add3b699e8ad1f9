"""A short way to write a test machine's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvmlite.config import BootSource, CharConfig, MachineConfig, VmConfig


def guest_config(
    kernel: Path | None,
    *,
    initrd: Path | None = None,
    cmdline: str = "",
    memory: int = 32 << 20,
    cpus: int = 1,
    console: str = "null",
    **resources: Any,
) -> VmConfig:
    """``VmConfig`` for a test guest: the kernel, its size, a console spec, and any other
    resource by its ``VmConfig`` field name (``drives=``, ``nets=``, ``rng=``...)."""
    machine = resources.pop("machine", None) or MachineConfig(memory=memory, cpus=cpus)
    return VmConfig(
        machine=machine,
        boot=BootSource(kernel, initrd, cmdline),
        console=CharConfig.parse(console),
        **resources,
    )

"""build_vm: a failure half-way leaves nothing open behind (DESIGN.md rule 7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmlite.config import CharConfig, DriveConfig, RngConfig, VirtioConsoleConfig
from kvmlite.errors import ImageError
from kvmlite.testing.configs import guest_config
from kvmlite.vmm.builder import build_vm

pytestmark = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_bad_kernel_after_devices_leaves_no_fd_open(tmp_path: Path) -> None:
    junk = tmp_path / "kernel"
    junk.write_bytes(b"\x7fELF" + b"\0" * 60)  # an ELF header that says nothing useful
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    config = guest_config(
        junk,
        drives=(DriveConfig(disk),),
        rng=RngConfig(),
        virtio_console=VirtioConsoleConfig(CharConfig.parse("null")),
    )
    before = open_fds()
    with pytest.raises(ImageError):
        build_vm(config)
    assert open_fds() == before

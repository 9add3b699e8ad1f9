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


def test_a_bad_kernel_leaves_output_files_alone(tmp_path: Path) -> None:
    """Issue 17, defect 4: the kernel is checked before any backend opens a file."""
    from kvmlite.cli import main

    not_a_kernel = tmp_path / "hostname"
    not_a_kernel.write_text("myhost\n")
    log = tmp_path / "console.log"
    log.write_text("keep me\n")
    fresh = tmp_path / "serial.log"
    status = main(
        ["run", "-k", str(not_a_kernel), "--console", f"file:{log}", "--serial", f"file:{fresh}"]
    )
    assert status == 1
    assert log.read_text() == "keep me\n"
    assert not fresh.exists()

"""Slow: the default Linux guest (busybox shell) snapshotted at its prompt and
restored in a fresh Vmm: a command typed after the restore runs, a file the
shell wrote before is there, sleep returns (timekeeping goes on), and the
virtio-blk disk (virtio-pci, MSI-X, ioeventfd) still answers."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

from kvmlite.config import CharConfig, DriveConfig
from kvmlite.guestimage import SHELL_PROMPT
from kvmlite.testing.configs import guest_config
from kvmlite.testing.expect import Expect
from kvmlite.vmm.actions import Pause, Start
from kvmlite.vmm.vmm import Vmm

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs /dev/kvm"),
]

BOOT_TIMEOUT = 600  # a loaded 2-core emulated-KVM host took over 240 s


def connect(path: Path, timeout: float = 30) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_shell_goes_on_after_restore(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    sock_a, sock_b = tmp_path / "a.sock", tmp_path / "b.sock"
    config = guest_config(
        None, memory=64 << 20, console=f"unix:{sock_a}", drives=(DriveConfig(disk),)
    )
    vmm = Vmm(config)
    try:
        vmm.submit(Start(), timeout=None)
        con = connect(sock_a)
        shell = Expect(con.fileno(), con.fileno())
        shell.expect(re.escape(SHELL_PROMPT), BOOT_TIMEOUT)
        shell.sendline(
            "echo written-before > /tmp/f; echo SNAPMARK | dd of=/dev/vda conv=sync"
            " 2>/dev/null; sync; echo ready-$((6*7))"
        )
        shell.expect("ready-42", 120)
        shell.expect(re.escape(SHELL_PROMPT), 60)
        vmm.submit(Pause())
        vmm.snapshot(tmp_path / "snap")
        con.close()
    finally:
        vmm.close()
    assert disk.read_bytes()[:8] == b"SNAPMARK"
    restored = Vmm()
    try:
        restored.restore(tmp_path / "snap", console=CharConfig.parse(f"unix:{sock_b}"))
        con = connect(sock_b)
        shell = Expect(con.fileno(), con.fileno())
        shell.sendline("cat /tmp/f; sleep 1; echo after-$((6*8))")
        shell.expect("written-before", 120)
        shell.expect("after-48", 120)
        shell.sendline("dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 8; echo; echo done")
        shell.expect("SNAPMARK", 120)
        shell.expect("done", 60)
        con.close()
    finally:
        restored.close()

"""Slow, /dev/kvm: ``kvmlite run --cdrom DIR -d DISK,if=scsi`` with Linux's own drivers.

The default guest (busybox, plus sg3-utils from tests/vhost_user/scsi_rig.py)
boots on kvmlite with a directory as its CD-ROM (made into an ISO 9660 image
by pycdlib) and a raw disk on virtio-scsi. Judges: the host's checksums of
the directory's files, and e2fsck on the disk the guest formatted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from vhost_user.qemu_rig import GuestShell
from vhost_user.scsi_rig import build_scsi_guest, iso_tree

from kvmlite.testing.expect import Expect

from .test_linux_boot import BOOT_TIMEOUT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs /dev/kvm"),
]


def test_cdrom_directory_and_scsi_disk(tmp_path: Path) -> None:
    guest = build_scsi_guest(tmp_path)
    src = tmp_path / "drivers"
    files = iso_tree(src, 3)
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(16 << 20))
    argv = [
        sys.executable, "-m", "kvmlite.cli", "run", "--console", "stdio",
        "-k", guest.vmlinux, "-i", guest.initrd, "-m", "128M",
        "--cdrom", src, "--cdrom", "", "-d", f"{disk},if=scsi", "-a", "quiet",
    ]  # fmt: skip
    console = Expect.spawn([str(a) for a in argv])
    try:
        shell = GuestShell(console)
        shell.wait_ready(timeout=BOOT_TIMEOUT)
        loop = "while [ ! -b /dev/sda ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done"
        shell.sh(f"i=0; {loop}; mkdir -p /cd /hd && mount -t iso9660 -o ro /dev/sr0 /cd",
                 timeout=300)  # fmt: skip
        names = " ".join(f"'/cd/{n}'" for n in files)
        out = shell.sh(f"sha256sum {names}", timeout=300)
        for name, data in files.items():
            assert f"{hashlib.sha256(data).hexdigest()}  /cd/{name}" in out, (name, out)
        rc, out = shell.run("sg_turs /dev/sr1", timeout=120)  # the empty drive
        assert rc != 0 and "not ready" in out.lower(), out
        shell.sh("umount /cd; mke2fs -q -b 1024 /dev/sda && mount -t ext4 /dev/sda /hd"
                 " && echo hello > /hd/f && umount /hd && sync", timeout=300)  # fmt: skip
        shell.poweroff(timeout=120)
    finally:
        console.close()
    if shutil.which("e2fsck"):
        fsck = subprocess.run(["e2fsck", "-fn", str(disk)], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr

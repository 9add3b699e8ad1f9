"""Slow, /dev/kvm: ``kvmlite run --cdrom DIR --cdrom '' -d DISK,if=scsi`` with Linux's drivers.

The machine is built from the ``kvmlite run`` command line (config_from_args)
and runs in this process (as ``kvmlite run`` does: Vmm + Start), its console
on a unix socket. The default guest (busybox, plus sg3-utils from
tests/vhost_user/scsi_rig.py) mounts the directory's ISO (pycdlib) from
/dev/sr0 and checks its files against the host's checksums; the mounted
drive refuses a host eject (TrayLocked); unmounted, the host swaps in an ISO
made by xorriso and the guest (polling, ``block.events_dfl_poll_msecs``)
mounts the new one; a host eject leaves NOT READY. The guest formats the
SCSI disk; e2fsck on the host is the judge.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from vhost_user.qemu_rig import GuestShell
from vhost_user.scsi_rig import build_scsi_guest, iso_tree, make_iso

from kvmlite.backends.block.cdrom import open_medium
from kvmlite.cli.run import config_from_args, register
from kvmlite.devices.scsi import ScsiCdrom, TrayLocked
from kvmlite.guestimage import SHELL_PROMPT
from kvmlite.testing.expect import Expect
from kvmlite.vmm.actions import Inspect, Quit, Start
from kvmlite.vmm.vmm import Vmm

from .test_linux_boot import BOOT_TIMEOUT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs /dev/kvm"),
]


def connect(path: Path, timeout: float = 60) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(path))
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def sha_check(shell: GuestShell, files: dict[str, bytes]) -> None:
    out = shell.sh("sha256sum " + " ".join(f"'/cd/{n}'" for n in files), timeout=300)
    for name, data in files.items():
        assert f"{hashlib.sha256(data).hexdigest()}  /cd/{name}" in out, (name, out)


def test_cdrom_media_change_and_scsi_disk(tmp_path: Path) -> None:
    guest = build_scsi_guest(tmp_path)
    first = iso_tree(tmp_path / "drivers", 3)
    second_src = tmp_path / "second"
    second = iso_tree(second_src, 4)
    (second_src / "SECOND").write_text("2\n")
    second_iso = tmp_path / "second.iso"
    make_iso(second_src, second_iso)
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(16 << 20))
    con = tmp_path / "console.sock"
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([
        "run", "-k", str(guest.vmlinux), "-i", str(guest.initrd), "-m", "128M",
        "--console", f"unix:{con}", "-a", "block.events_dfl_poll_msecs=1000",
        "--cdrom", str(tmp_path / "drivers"), "--cdrom", "", "-d", f"{disk},if=scsi",
    ])  # fmt: skip
    vmm = Vmm(config_from_args(args))
    sock = None
    try:
        vmm.submit(Start(), timeout=None)
        sock = connect(con)
        shell = GuestShell(Expect(sock.fileno(), sock.fileno()))
        # Reached only serial init in 600 s at load 6; busybox commands take seconds each.
        shell.console.expect(re.escape(SHELL_PROMPT), 2 * BOOT_TIMEOUT)
        shell.sh("dmesg -n 1", timeout=300)

        def cd0(m: object) -> ScsiCdrom:
            return m.devices.get("cd0", ScsiCdrom)  # type: ignore[attr-defined]

        loop = "while [ ! -b /dev/sda ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done"
        shell.sh(f"i=0; {loop}; mkdir -p /cd /hd && mount -t iso9660 -o ro /dev/sr0 /cd",
                 timeout=300)  # fmt: skip
        sha_check(shell, first)
        # Mounted, the tray is locked: the host's eject is refused, the medium stays.
        with pytest.raises(TrayLocked):
            vmm.submit(Inspect(lambda m: cd0(m).eject()))
        assert vmm.submit(Inspect(lambda m: cd0(m).medium is not None))
        rc, out = shell.run("sg_turs /dev/sr1", timeout=120)  # the empty drive
        assert rc != 0 and "not ready" in out.lower(), out
        shell.sh("umount /cd", timeout=120)
        # Unmounted: swap the medium; the guest finds the new one.
        # (Inspect stands in for the management layer's media-change action.)
        new = open_medium(str(second_iso))
        assert new is not None
        old = vmm.submit(Inspect(lambda m: cd0(m).insert(new)))
        old.close()
        wait = "while ! mount -t iso9660 -o ro /dev/sr0 /cd 2>/dev/null && [ $i -lt 60 ]"
        shell.sh(f"i=0; {wait}; do sleep 1; i=$((i+1)); done; [ -f /cd/SECOND ]", timeout=300)
        sha_check(shell, second)
        shell.sh("umount /cd", timeout=120)
        vmm.submit(Inspect(lambda m: cd0(m).eject())).close()
        rc, out = shell.run("sg_turs /dev/sr0", timeout=120)
        assert rc != 0 and "not ready" in out.lower(), out
        shell.sh("mke2fs -q -b 1024 /dev/sda && mount -t ext4 /dev/sda /hd"
                 " && echo hello > /hd/f && umount /hd && sync", timeout=300)  # fmt: skip
        vmm.submit(Quit("test done"))
    finally:
        if sock is not None:
            sock.close()
        vmm.close()
    if shutil.which("e2fsck"):
        fsck = subprocess.run(["e2fsck", "-fn", str(disk)], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr

"""QEMU as the judge of the SCSI models: Linux's virtio_scsi, sr, sd and isofs on
``kvmlite serve scsi`` (vhost-user-scsi-pci, -accel tcg), and sg3-utils against
kvmlite and against QEMU's own scsi-cd on the same ISO (made by xorriso).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from kvmlite.testing.expect import Expect

from . import qemu_rig
from .qemu_rig import GuestShell, NetGuest, qemu_argv, serve
from .scsi_rig import build_scsi_guest, iso_tree, make_iso

pytestmark = pytest.mark.slow

procs = qemu_rig.procs


@pytest.fixture(scope="module")
def scsi_guest(tmp_path_factory: pytest.TempPathFactory) -> NetGuest:
    return build_scsi_guest(tmp_path_factory.mktemp("scsiguest"))


def vhost_user_scsi(sock: Path) -> list[str]:
    return [
        "-chardev", f"socket,id=vu0,path={sock}",
        "-device", "vhost-user-scsi-pci,chardev=vu0,num_queues=1,virtqueue_size=128",
    ]  # fmt: skip


def qemu_scsi_cd(iso: Path) -> list[str]:
    return [
        "-device", "virtio-scsi-pci,id=hba",
        "-drive", f"file={iso},if=none,id=cd0,media=cdrom,readonly=on,format=raw",
        "-device", "scsi-cd,drive=cd0,bus=hba.0",
    ]  # fmt: skip


def boot(procs: list, guest: NetGuest, devices: Sequence[str]) -> GuestShell:
    c = Expect.spawn(qemu_argv(guest, devices, append="quiet block.events_dfl_poll_msecs=500"))
    procs.append(c)
    shell = GuestShell(c)
    shell.wait_ready(timeout=180)
    return shell


def wait_for(shell: GuestShell, dev: str) -> None:
    loop = f"while [ ! -b {dev} ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done"
    shell.sh(f"i=0; {loop}; [ -b {dev} ]", timeout=90)


def test_linux_mounts_a_served_iso_and_makes_ext2_on_a_served_disk(
    tmp_path: Path, procs: list, scsi_guest: NetGuest
) -> None:
    src = tmp_path / "src"
    files = iso_tree(src, 1)
    iso = tmp_path / "test.iso"
    make_iso(src, iso)
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(16 << 20))
    sock = tmp_path / "scsi.sock"
    server = serve(procs, sock, "scsi", "--cdrom", str(iso), str(disk))
    shell = boot(procs, scsi_guest, vhost_user_scsi(sock))
    wait_for(shell, "/dev/sr0")
    wait_for(shell, "/dev/sda")
    run = shell.sh
    run("mkdir -p /cd /hd && mount -t iso9660 -o ro /dev/sr0 /cd")
    for name, data in files.items():
        out = run(f"sha256sum '/cd/{name}'")
        assert hashlib.sha256(data).hexdigest() in out, (name, out)
    # Mounted, the tray is locked (sr sends PREVENT ALLOW MEDIUM REMOVAL): eject is refused.
    rc, out = shell.run("sg_start --eject /dev/sr0")
    assert rc != 0 and re.search(r"(?i)illegal request|removal prevented", out), out
    run("umount /cd")
    run("sg_start --eject /dev/sr0")
    rc, out = shell.run("sg_turs /dev/sr0")
    assert rc != 0 and re.search(r"(?i)not ready", out), out
    run("sg_start --load /dev/sr0 && sg_turs /dev/sr0 || sg_turs /dev/sr0")
    # The disk: ext2 by busybox, checked by e2fsck on the host.
    run("mke2fs -q -b 1024 /dev/sda && mount -t ext4 /dev/sda /hd")
    run("cp '/cd/big.bin' /hd/ 2>/dev/null || dd if=/dev/urandom of=/hd/big.bin bs=64k count=8")
    run("echo hello-scsi > /hd/small && umount /hd && sync")
    shell.poweroff(timeout=60)
    assert server.poll() is None
    if shutil.which("e2fsck"):
        fsck = subprocess.run(["e2fsck", "-fn", str(disk)], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr


SG_COMMANDS = ("sg_inq /dev/sr0", "sg_readcap /dev/sr0", "sg_turs -v /dev/sr0")


def sg_answers(shell: GuestShell) -> dict[str, str]:
    wait_for(shell, "/dev/sr0")
    # The first command may meet a unit attention left from the scan.
    shell.run("sg_turs /dev/sr0")
    return {cmd: "\n".join(shell.run(cmd)[1].split("\n")) for cmd in SG_COMMANDS}


def test_sg3_utils_answers_match_qemu_scsi_cd(
    tmp_path: Path, procs: list, scsi_guest: NetGuest
) -> None:
    src = tmp_path / "src"
    iso_tree(src, 2)
    iso = tmp_path / "test.iso"
    make_iso(src, iso)
    sock = tmp_path / "scsi.sock"
    serve(procs, sock, "scsi", "--cdrom", str(iso))
    ours = sg_answers(boot(procs, scsi_guest, vhost_user_scsi(sock)))
    qemu_rig.stop_all(procs)
    procs.clear()
    theirs = sg_answers(boot(procs, scsi_guest, qemu_scsi_cd(iso)))
    print("\nkvmlite:", ours, "\nqemu:", theirs)
    for cmd in SG_COMMANDS:
        a = fields(ours[cmd])
        b = fields(theirs[cmd])
        for key in set(a) | set(b):
            if key in IDENTITY_FIELDS:
                continue
            assert a.get(key) == b.get(key), (cmd, key, a.get(key), b.get(key))


#: Who made the drive, not how it behaves: these differ by design.
IDENTITY_FIELDS = {"Vendor identification", "Product identification", "Product revision level",
                   "Unit serial number"}  # fmt: skip


def fields(text: str) -> dict[str, str]:
    """``key: value`` and ``key=value`` pairs of an sg3-utils report."""
    out = {}
    for line in text.splitlines():
        for m in re.finditer(r"([A-Za-z][\w /()-]*?)\s*[:=]\s*([^\s,]+)", line):
            out[m.group(1).strip()] = m.group(2)
    return out

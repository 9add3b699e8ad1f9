"""QEMU as the judge: Linux's own drivers on kvmlite's devices over vhost-user.

QEMU (``-accel tcg``, q35) boots kvmlite's default kernel with a
``vhost-user-blk-pci`` or ``vhost-user-rng-pci`` device whose back-end is a
``kvmlite serve`` process; guest RAM is a shared memfd
(``memory-backend-memfd,share=on``), as vhost-user requires.  /init
(guest/vhost_blk_init.c) reads the disk's first 64 KiB and writes a pattern
at 1 MiB, or reads /dev/hwrng; the host file and the console are the judges.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kvmlite.backends.block.engines import ENGINES
from kvmlite.guestimage import DefaultGuest, check_guest, default_guest
from kvmlite.guestimage.initramfs import build_single_init_initramfs
from kvmlite.guestimage.programs import compile_static
from kvmlite.testing.expect import Expect

from . import qemu_rig
from .qemu_rig import QEMU, GuestShell, NetGuest, qemu_argv, serve, vhost_user_device

pytestmark = pytest.mark.slow

procs = qemu_rig.procs  # shared with the other QEMU tests

INIT_SOURCE = Path(__file__).parent / "guest" / "vhost_blk_init.c"
CHUNK = 64 * 1024
WRITE_AT = 1 << 20
SECTOR = 512


def fnv(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & ((1 << 64) - 1)
    return h


def guest_pattern() -> bytes:
    return bytes((i * 7 + 3 + (i >> 9)) & 0xFF for i in range(CHUNK))


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> tuple[DefaultGuest, Path]:
    if shutil.which(QEMU) is None:
        pytest.fail(f"{QEMU} missing: apt-get install qemu-system-x86")
    kernel = check_guest(progress=False)  # the kernel (built and cached on first use)
    init = compile_static(INIT_SOURCE)
    return kernel, build_single_init_initramfs(init, tmp_path_factory.mktemp("vu") / "init.cpio")


@pytest.fixture(scope="module")
def busybox_guest() -> DefaultGuest:
    return default_guest(progress=False)


def qemu(
    procs: list, guest: tuple[DefaultGuest, Path], sock: Path, device: str, append: str = ""
) -> Expect:
    kernel, initrd = guest
    argv = qemu_argv(NetGuest(kernel.vmlinux, initrd), vhost_user_device(sock, device),
                     append=append)  # fmt: skip
    c = Expect.spawn(argv)
    procs.append(c)
    return c


def outcome(c: Expect, key: str, timeout: float) -> str:
    """The value of the guest's ``VHOST: key=...`` line, or its error."""
    # Up to the line's end: a match must not stop inside a line still arriving.
    m = c.expect(rf"VHOST: ({key}=[^\r\n]*|error=[^\r\n]*\r?\nVHOST: errno=[^\r\n]*)\r?\n", timeout)
    return m.group(1).decode()


def check_disk_io(c: Expect, image: Path, head: bytes) -> None:
    assert outcome(c, "read", 180) == f"read={fnv(head):016x}", "guest read other bytes"
    assert outcome(c, "verify", 60) == "verify=ok"
    c.expect(rb"VHOST-DONE", timeout=60)
    c.wait_eof(timeout=60)
    assert image.read_bytes()[WRITE_AT : WRITE_AT + CHUNK] == guest_pattern()


def make_image(tmp_path: Path) -> tuple[Path, bytes]:
    image = tmp_path / "disk.raw"
    head = os.urandom(CHUNK)
    image.write_bytes(head + bytes((4 << 20) - CHUNK))
    return image, head


@pytest.mark.parametrize("aio", ENGINES)
def test_linux_reads_and_writes_a_served_disk(
    tmp_path: Path, guest: tuple[DefaultGuest, Path], procs: list, aio: str
) -> None:
    image, head = make_image(tmp_path)
    sock = tmp_path / "blk.sock"
    server = serve(procs, sock, "blk", f"{image},aio={aio}")
    start = time.monotonic()
    c = qemu(procs, guest, sock, "vhost-user-blk-pci")
    check_disk_io(c, image, head)
    print(f"\nqemu/tcg + kvmlite serve blk: done after {time.monotonic() - start:.1f} s")
    # The back-end outlives its front-end, then stops cleanly.
    assert server.poll() is None
    server.send_signal(signal.SIGTERM)
    assert server.wait(10) == 0


def test_frontend_killed_mid_io_then_a_new_one(
    tmp_path: Path, guest: tuple[DefaultGuest, Path], procs: list
) -> None:
    image, head = make_image(tmp_path)
    sock = tmp_path / "blk.sock"
    server = serve(procs, sock, "blk", str(image))
    c = qemu(procs, guest, sock, "vhost-user-blk-pci", "vhost_mode=loop")
    assert outcome(c, "loop", 180) == "loop=running"
    time.sleep(0.5)  # the guest keeps writing
    assert c.process is not None
    c.process.send_signal(signal.SIGKILL)
    c.process.wait(10)
    # Each sector of the looped area holds the pattern or its old zeros: no torn garbage.
    pat = guest_pattern()
    area = image.read_bytes()[2 * WRITE_AT : 2 * WRITE_AT + CHUNK]
    for off in range(0, CHUNK, SECTOR):
        assert area[off : off + SECTOR] in (pat[off : off + SECTOR], bytes(SECTOR)), off
    assert area == pat  # the first full pass was fsynced before "running"
    # The same back-end serves the next QEMU.
    c2 = qemu(procs, guest, sock, "vhost-user-blk-pci")
    check_disk_io(c2, image, head)
    assert server.poll() is None
    server.send_signal(signal.SIGTERM)
    assert server.wait(10) == 0


def test_linux_reads_a_served_hwrng(
    tmp_path: Path, guest: tuple[DefaultGuest, Path], procs: list
) -> None:
    sock = tmp_path / "rng.sock"
    serve(procs, sock, "rng")
    c = qemu(procs, guest, sock, "vhost-user-rng-pci", "vhost_mode=rng")
    value = outcome(c, "hwrng", 180)
    assert re.fullmatch(r"hwrng=[0-9a-f]{64}", value), value
    assert len(set(bytes.fromhex(value[6:]))) > 8  # 32 random bytes, not a constant
    c.expect(rb"VHOST-DONE", timeout=60)
    c.wait_eof(timeout=60)


def test_ext2_made_in_the_guest_is_clean_on_the_host(
    tmp_path: Path, procs: list, busybox_guest: DefaultGuest
) -> None:
    """busybox mke2fs + mount + files in the guest; e2fsck -fn and debugfs on the host."""
    for tool in ("e2fsck", "debugfs"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: apt-get install e2fsprogs")
    image = tmp_path / "fs.raw"
    image.write_bytes(bytes(16 << 20))
    sock = tmp_path / "blk.sock"
    server = serve(procs, sock, "blk", str(image))
    c = qemu(procs, (busybox_guest, busybox_guest.initrd), sock, "vhost-user-blk-pci")
    shell = GuestShell(c)
    shell.wait_ready(timeout=180)
    run = shell.sh
    run("mke2fs -q -b 1024 /dev/vda")
    run("mkdir -p /mnt && mount -t ext4 /dev/vda /mnt")
    run("dd if=/dev/urandom of=/mnt/big bs=64k count=40 2>/dev/null")
    run("mkdir /mnt/dir && echo hello-vhost > /mnt/dir/small && sync")
    out = run("sha256sum /mnt/big")
    guest_sum = re.search(r"\b([0-9a-f]{64})\s+/mnt/big", out)
    assert guest_sum, out
    run("umount /mnt && sync")
    shell.poweroff(timeout=60)
    assert server.poll() is None

    fsck = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    big = tmp_path / "big"
    subprocess.run(
        ["debugfs", "-R", f"dump /big {big}", str(image)], capture_output=True, check=True
    )
    assert hashlib.sha256(big.read_bytes()).hexdigest() == guest_sum.group(1)
    small = subprocess.run(
        ["debugfs", "-R", "cat /dir/small", str(image)], capture_output=True, text=True
    )
    assert small.stdout.strip() == "hello-vhost"

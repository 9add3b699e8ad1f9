"""vhost-user-blk: kvmlite serve blk against qemu-storage-daemon, same guest, same image.

QEMU 7.2 (``-accel tcg``, q35, 256 MiB of shared memfd RAM) boots kvmlite's
default kernel and busybox initramfs with a ``vhost-user-blk-pci`` disk
(queue-size 128, one queue) whose back-end is either ``kvmlite serve blk``
or ``qemu-storage-daemon --export type=vhost-user-blk`` (QEMU docs
tools/qemu-storage-daemon.rst), both over the same 128 MiB raw image through
the host page cache (kvmlite's default raw backend; qsd's ``driver=file``
without ``cache.direct``). In the guest, busybox ``dd`` with O_DIRECT and
64 KiB blocks writes the whole disk and reads it back; the time is the
guest's ``/proc/uptime`` around each ``dd`` (TCG's guest clock follows the
host's). Best of RUNS interleaved boots per back-end, so both see the same
host load. The guest's driver runs under TCG, identically on both sides, so
ratios sit nearer 1 than the back-ends alone would.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Row

RUNS = 2
IMAGE_MB = 128
BLOCK = "64k"
COUNT = IMAGE_MB * 16  # 64 KiB blocks
QEMU = "qemu-system-x86_64"
QSD = "qemu-storage-daemon"
TIMEOUT_S = 180


def _start_backend(procs: list, kind: str, image: Path, sock: Path) -> None:
    from tests.vhost_user.qemu_rig import serve, start_backend  # noqa: PLC0415

    if kind == "kvmlite":
        serve(procs, sock, "blk", str(image))
        return
    argv = [
        QSD,
        "--blockdev", f"driver=file,node-name=f,filename={image}",
        "--export",
        f"type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path={sock},writable=on",
    ]  # fmt: skip
    start_backend(procs, argv, sock, seconds=30)


def _guest_dd(procs: list, guest, sock: Path) -> tuple[float, float]:  # noqa: ANN001
    """Boot QEMU on ``sock``; (write seconds, read seconds) of the in-guest dd."""
    from kvmlite.guestimage import SHELL_PROMPT  # noqa: PLC0415
    from kvmlite.testing.expect import Expect  # noqa: PLC0415
    from tests.vhost_user.qemu_rig import qemu_argv, vhost_user_device  # noqa: PLC0415

    disk = vhost_user_device(sock, "vhost-user-blk-pci,queue-size=128,num-queues=1")
    c = Expect.spawn(qemu_argv(guest, disk, memory_mb=256, append=""))
    procs.append(c)
    c.expect(re.escape(SHELL_PROMPT), timeout=TIMEOUT_S)
    c.sendline("dmesg -n 1")  # no kernel messages between the numbers
    times = []
    for dd in (
        f"dd if=/dev/zero of=/dev/vda bs={BLOCK} count={COUNT} oflag=direct",
        f"dd if=/dev/vda of=/dev/null bs={BLOCK} count={COUNT} iflag=direct",
    ):
        c.sendline(f"cut -d' ' -f1 /proc/uptime; {dd} 2>/dev/null; echo RC=$?;"
                   " cut -d' ' -f1 /proc/uptime")  # fmt: skip
        m = c.expect(
            rb"\n(\d+\.\d+)\r?\n(?:.*\r?\n)*?RC=(\d+)\r?\n(\d+\.\d+)\r?\n", timeout=TIMEOUT_S
        )
        if m.group(2) != b"0":
            raise RuntimeError(f"guest {dd!r} failed")
        times.append(float(m.group(3)) - float(m.group(1)))
    c.sendline("poweroff -f")
    c.wait_eof(timeout=60)
    return times[0], times[1]


def rows() -> list[Row]:
    from benchmarks.run import Skip  # noqa: PLC0415

    for tool, pkg in ((QEMU, "qemu-system-x86"), (QSD, "qemu-system-common")):
        if shutil.which(tool) is None:
            raise Skip(f"{tool} is not installed (apt-get install {pkg})")
    from kvmlite.guestimage import default_guest  # noqa: PLC0415
    from tests.vhost_user.qemu_rig import stop_all  # noqa: PLC0415

    guest = default_guest(progress=False)
    best: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("KVMLITE_BENCH_DIR")) as d:
        image = Path(d) / "disk.raw"
        with open(image, "wb") as f:  # allocated, so neither side pays for new blocks
            f.write(bytes(IMAGE_MB << 20))
        for run in range(RUNS):
            for kind in ("kvmlite", "qsd"):
                sock = Path(d) / f"{kind}{run}.sock"
                procs: list = []  # the back-end, then QEMU: stopped in reverse order
                try:
                    _start_backend(procs, kind, image, sock)
                    w, r = _guest_dd(procs, guest, sock)
                finally:
                    stop_all(procs)
                print(f"  {kind}: write {w:.2f} s, read {r:.2f} s", file=sys.stderr)
                for op, t in (("write", w), ("read", r)):
                    best[kind, op] = min(t, best.get((kind, op), float("inf")))
    mb = float(IMAGE_MB << 20) / 1e6
    return [
        Row(
            f"vhost-user-blk {op}, in-guest dd O_DIRECT 64 KiB (QEMU tcg)",
            mb / best["kvmlite", op],
            mb / best["qsd", op],
            "MB/s",
            higher_is_better=True,
            reference_name="qemu-storage-daemon",
        )
        for op in ("write", "read")
    ]

"""CD-ROM sequential read: kvmlite serve scsi (vhost-user-scsi) against QEMU's own scsi-cd.

QEMU 7.2 (``-accel tcg``, q35, 256 MiB of shared memfd RAM) boots kvmlite's
default kernel and busybox initramfs with a CD-ROM holding the same
128 MiB medium (random bytes: sequential reads do not look at the file
system): either ``vhost-user-scsi-pci`` served by ``kvmlite serve scsi
--cdrom`` or QEMU's ``virtio-scsi-pci`` + ``scsi-cd`` on the file. In the
guest, busybox ``dd`` with O_DIRECT and 64 KiB blocks reads /dev/sr0 to the
end; the time is the guest's ``/proc/uptime`` around it. Best of RUNS
interleaved boots per side, so both see the same host load.
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
MEDIUM_MB = 128
QEMU = "qemu-system-x86_64"
TIMEOUT_S = 240


def _guest_read(procs: list, guest, devices: list[str]) -> float:  # noqa: ANN001
    from kvmlite.guestimage import SHELL_PROMPT  # noqa: PLC0415
    from kvmlite.testing.expect import Expect  # noqa: PLC0415
    from tests.vhost_user.qemu_rig import qemu_argv  # noqa: PLC0415

    c = Expect.spawn(qemu_argv(guest, devices, memory_mb=256, append=""))
    procs.append(c)
    c.expect(re.escape(SHELL_PROMPT), timeout=TIMEOUT_S)
    c.sendline("dmesg -n 1; i=0; while [ ! -b /dev/sr0 ] && [ $i -lt 60 ]; do sleep 1;"
               " i=$((i+1)); done")  # fmt: skip
    dd = f"dd if=/dev/sr0 of=/dev/null bs=64k count={MEDIUM_MB * 16} iflag=direct"
    c.sendline(f"cut -d' ' -f1 /proc/uptime; {dd} 2>/dev/null; echo RC=$?;"
               " cut -d' ' -f1 /proc/uptime")  # fmt: skip
    m = c.expect(rb"\n(\d+\.\d+)\r?\n(?:.*\r?\n)*?RC=(\d+)\r?\n(\d+\.\d+)\r?\n", timeout=TIMEOUT_S)
    if m.group(2) != b"0":
        raise RuntimeError(f"guest {dd!r} failed")
    c.sendline("poweroff -f")
    c.wait_eof(timeout=60)
    return float(m.group(3)) - float(m.group(1))


def rows() -> list[Row]:
    from benchmarks.run import Skip  # noqa: PLC0415

    if shutil.which(QEMU) is None:
        raise Skip(f"{QEMU} is not installed (apt-get install qemu-system-x86)")
    from kvmlite.guestimage import default_guest  # noqa: PLC0415
    from tests.vhost_user.qemu_rig import serve, stop_all  # noqa: PLC0415
    from tests.vhost_user.test_qemu_scsi import qemu_scsi_cd, vhost_user_scsi  # noqa: PLC0415

    guest = default_guest(progress=False)
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("KVMLITE_BENCH_DIR")) as d:
        medium = Path(d) / "big.iso"
        with open(medium, "wb") as f:
            for _ in range(MEDIUM_MB):
                f.write(os.urandom(1 << 20))
        for run in range(RUNS):
            for kind in ("kvmlite", "qemu"):
                procs: list = []
                try:
                    if kind == "kvmlite":
                        sock = Path(d) / f"scsi{run}.sock"
                        serve(procs, sock, "scsi", "--cdrom", str(medium))
                        t = _guest_read(procs, guest, vhost_user_scsi(sock))
                    else:
                        t = _guest_read(procs, guest, qemu_scsi_cd(medium))
                finally:
                    stop_all(procs)
                print(f"  {kind}: read {t:.2f} s", file=sys.stderr)
                best[kind] = min(t, best.get(kind, float("inf")))
    mb = float(MEDIUM_MB << 20) / 1e6
    return [
        Row(
            "CD-ROM sequential read, in-guest dd O_DIRECT 64 KiB (QEMU tcg)",
            mb / best["kvmlite"],
            mb / best["qemu"],
            "MB/s",
            higher_is_better=True,
            reference_name="QEMU scsi-cd",
        )
    ]

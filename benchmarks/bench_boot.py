"""Start-up cost: boot a tiny PVH guest that only exits, kvmlite vs QEMU.

Both VMMs boot the same ELF through its PVH note on /dev/kvm with 64 MiB:
``kvmlite run`` against ``qemu-system-x86_64 -accel kvm -M microvm`` with an
``isa-debug-exit`` device at the same port (0x501). Measured: wall time of
the whole process (median of RUNS) and its peak RSS (from wait4's rusage).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row

RUNS = 5
HERE = Path(__file__).parent


def _measure(cmd: list[str], ok_status: int) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one run of ``cmd``, which must exit ``ok_status``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != ok_status:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {err}")
    return wall, usage.ru_maxrss / 1024


def _median(cmd: list[str], ok_status: int) -> tuple[float, float]:
    samples = [_measure(cmd, ok_status) for _ in range(RUNS)]
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def rows() -> list[Row]:
    from benchmarks.run import Skip
    from kvmlite.testing.guests import GUEST_DIR, build_guest, kvmlite_argv, qemu_argv

    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise Skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise Skip("/dev/kvm is not usable here")
    with tempfile.TemporaryDirectory() as tmp:
        elf = build_guest(HERE / "guests" / "exit.c", Path(tmp), kind="pvh", kit_dir=GUEST_DIR)
        kvmlite_cmd = kvmlite_argv(elf, "--console", "null")
        qemu_cmd = qemu_argv(elf, qemu=qemu, machine="microvm", serial="none")
        k_wall, k_rss = _median(kvmlite_cmd, 0)
        q_wall, q_rss = _median(qemu_cmd, 1)  # isa-debug-exit: (0 << 1) | 1
    return [
        Row("tiny guest boot+exit, wall time", k_wall, q_wall, "s", higher_is_better=False),
        Row("tiny guest boot+exit, peak RSS", k_rss, q_rss, "MiB", higher_is_better=False),
    ]

"""kill -9 at random points leaves an image that ``qemu-img check`` accepts
(leaked clusters at most, never corruption); see docs/qcow2.md for the ordering.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmlite.backends.block.qcow2 import Qcow2Backend, create_qcow2

from .helpers import assert_clean, qemu_check

WRITER = Path(__file__).with_name("crash_writer.py")


def _kill_during_writes(path: Path, seed: int, delay: float) -> None:
    p = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.strip() == "ready", p.stderr.read() if p.stderr else line
    time.sleep(delay)
    p.kill()
    p.wait()
    assert p.returncode == -9, p.stderr.read() if p.stderr else ""


@pytest.mark.slow
@pytest.mark.parametrize(
    "cluster,bits,version",
    [(65536, 16, 3), (512, 16, 3), (4096, 1, 3), (1024, 16, 2), (65536, 64, 3)],
)
def test_kill9_leaves_only_leaks(tmp_path: Path, cluster: int, bits: int, version: int) -> None:
    rnd = random.Random(cluster * bits)
    img = tmp_path / "c.qcow2"
    create_qcow2(str(img), 16 << 20, cluster_size=cluster, refcount_bits=bits, version=version)
    for round_ in range(3):
        _kill_during_writes(img, rnd.randrange(1 << 30), rnd.uniform(0.05, 0.6))
        rc, report = qemu_check(img)
        assert rc in (0, 3), f"round {round_}: qemu-img check exit {rc}: {report}"
        # The image stays usable: open it, read it all, write more next round.
        with Qcow2Backend(str(img)) as q:
            q.read(0, q.size)
    # and kvmlite can reclaim what the kills leaked
    r = subprocess.run(
        [sys.executable, "-m", "kvmlite.imgtool", "check", "-r", "leaks", str(img)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert_clean(img)


@pytest.mark.slow
def test_kill9_with_lazy_refcounts_is_repaired_on_open(tmp_path: Path) -> None:
    img = tmp_path / "lazy.qcow2"
    create_qcow2(str(img), 16 << 20, cluster_size=4096, lazy_refcounts=True)
    _kill_during_writes(img, 7, 0.5)
    with Qcow2Backend(str(img), read_only=True) as q:
        assert q.header.incompatible_features & 1, "dirty bit should be set after a crash"
        before = q.read(0, q.size)
    with Qcow2Backend(str(img)) as q:  # read-write open rebuilds the refcounts
        assert q.read(0, q.size) == before
    assert_clean(img)
    with Qcow2Backend(str(img), read_only=True) as q:
        assert not q.header.incompatible_features & 1

"""``kvmlite run`` and ``kvmlite serve blk`` refuse an image another user is writing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmlite.cli import main
from kvmlite.testing.poll import unix_listening

needs_kvm = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)


@pytest.fixture
def elf_kernel(tmp_path: Path) -> Path:
    from kvmlite.testing.guests import GUEST_DIR, build_guest

    return build_guest(GUEST_DIR / "hello.c", tmp_path, kind="pvh")


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    p = tmp_path / "d.raw"
    p.write_bytes(bytes(1 << 20))
    return p


@needs_kvm
def test_run_refuses_one_image_twice(capsys, elf_kernel: Path, disk: Path) -> None:
    status = main(["run", "-k", str(elf_kernel), "-d", str(disk), "-d", str(disk)])
    err = capsys.readouterr().err
    assert status == 1 and '"write" lock' in err and "this process" in err and str(disk) in err
    spec = f"{disk},locking=off"
    assert main(["run", "-k", str(elf_kernel), "-d", spec, "-d", spec]) == 0


@needs_kvm
def test_run_refuses_an_image_serve_blk_writes(capsys, elf_kernel: Path, disk: Path) -> None:
    sock = disk.parent / "blk.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvmlite.serve", "blk", "--socket", str(sock), str(disk)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not unix_listening(sock, proc.pid):  # the image is locked before it listens
            assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "serve never listened"
            time.sleep(0.05)
        status = main(["run", "-k", str(elf_kernel), "-d", str(disk)])
        err = capsys.readouterr().err
        assert status == 1 and '"write" lock' in err and f"process {proc.pid}" in err
        # and the other way round: a second serve of the image is refused
        r = subprocess.run(
            [sys.executable, "-m", "kvmlite.serve", "blk", "--socket", f"{sock}2", str(disk)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 1 and '"write" lock' in r.stderr
        # The escapes: ro,force-share reads it beside the writer; locking=off takes no lock.
        for spec in (f"{disk},ro,force-share", f"{disk},locking=off"):
            status = main(["run", "-k", str(elf_kernel), "-d", spec])
            err = capsys.readouterr().err
            assert status == 0 and "lock" not in err, (spec, err)
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()

"""``kvmlite serve scsi``: bad host input is a clear error, nothing is left listening."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cdrom", "{tmp}/missing.iso"], "missing.iso: no such CD-ROM image or directory"),
        ([], "needs at least one --cdrom or DISK"),
        (["--cdrom", "", "{tmp}/nodisk.raw"], "nodisk.raw"),
        (["{tmp}/x.raw,bogus"], "bad disk option"),
    ],
)
def test_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    sock = tmp_path / "s.sock"
    argv = [a.format(tmp=tmp_path) for a in args]
    r = subprocess.run(
        [sys.executable, "-m", "kvmlite.serve", "scsi", "--socket", str(sock), *argv],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert not sock.exists()

"""Shared helpers for the block backend tests: QEMU's tools as the judges."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

QEMU_IMG = "qemu-img"
QEMU_IO = "qemu-io"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def qemu_check(path: Path | str) -> tuple[int, dict[str, Any]]:
    """``qemu-img check --output=json``: (exit code, parsed report)."""
    r = subprocess.run(
        [QEMU_IMG, "check", "--output=json", str(path)], capture_output=True, text=True
    )
    try:
        report = json.loads(r.stdout) if r.stdout.strip() else {}
    except json.JSONDecodeError:
        report = {"raw": r.stdout, "stderr": r.stderr}
    report.setdefault("stderr", r.stderr[:2000])
    return r.returncode, report


def assert_clean(path: Path | str, allow_leaks: bool = False) -> None:
    rc, report = qemu_check(path)
    ok = (0, 3) if allow_leaks else (0,)
    assert rc in ok, f"qemu-img check {path}: exit {rc}: {report}"
    assert report.get("corruptions", 0) == 0, report


def qemu_io(path: Path | str, *cmds: str, fmt: str = "qcow2") -> None:
    args = [QEMU_IO, "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    r = run(*args, str(path))
    assert "error" not in r.stdout.lower() and "failed" not in r.stdout.lower(), r.stdout


def qemu_create(path: Path | str, size: int | str, *opts: str, fmt: str = "qcow2") -> None:
    args = [QEMU_IMG, "create", "-q", "-f", fmt]
    if opts:
        args += ["-o", ",".join(opts)]
    run(*args, str(path), str(size))


def qemu_raw(path: Path | str, out: Path, fmt: str | None = None) -> bytes:
    """The guest-visible content of an image, as qemu-img converts it to raw."""
    args = [QEMU_IMG, "convert"]
    if fmt:
        args += ["-f", fmt]
    run(*args, "-O", "raw", str(path), str(out))
    return out.read_bytes()


def qemu_compare(a: Path | str, b: Path | str, fa: str = "qcow2", fb: str = "qcow2") -> None:
    r = run(QEMU_IMG, "compare", "-f", fa, "-F", fb, str(a), str(b), check=False)
    assert r.returncode == 0, f"qemu-img compare: {r.stdout}{r.stderr}"

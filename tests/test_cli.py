"""``kvmlite run`` refuses bad input with a clear message and a non-zero status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmlite.cli import main

needs_kvm = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)


def run(capsys, *argv: str) -> tuple[int, str]:
    status = main(["run", *argv])
    return status, capsys.readouterr().err


@pytest.fixture
def elf_kernel(tmp_path: Path) -> Path:
    from kvmlite.testing.guests import GUEST_DIR, build_guest

    return build_guest(GUEST_DIR / "hello.c", tmp_path, kind="pvh")


def test_missing_kernel(capsys, tmp_path):
    status, err = run(capsys, "-k", str(tmp_path / "bzImage"))
    assert status == 1 and "does not exist" in err and "bzImage" in err


def test_not_a_kernel(capsys, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello, this is not a kernel\n" * 100)
    status, err = run(capsys, "-k", str(junk), "--kvm-device", "/dev/kvm")
    assert status == 1 and "neither a bzImage" in err and "notes.txt" in err


def test_empty_kernel(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    status, err = run(capsys, "-k", str(empty))
    assert status == 1 and "empty" in err


@needs_kvm
def test_truncated_kernel(capsys, elf_kernel, tmp_path):
    cut = tmp_path / "cut.elf"
    cut.write_bytes(elf_kernel.read_bytes()[:200])
    status, err = run(capsys, "-k", str(cut))
    assert status == 1 and "cut.elf" in err


def test_initrd_too_large(capsys, elf_kernel, tmp_path):
    big = tmp_path / "initrd"
    with open(big, "wb") as f:
        f.truncate(40 << 20)
    status, err = run(capsys, "-k", str(elf_kernel), "-i", str(big), "-m", "32")
    assert status == 1 and "does not fit" in err


@pytest.mark.parametrize("mem", ["1M", "2T", "lots"])
def test_memory_out_of_range(capsys, elf_kernel, mem):
    status, err = run(capsys, "-k", str(elf_kernel), "-m", mem)
    assert status == 1 and ("too small" in err or "too large" in err or "bad size" in err)


def test_too_many_vcpus(capsys, elf_kernel):
    status, err = run(capsys, "-k", str(elf_kernel), "-c", "1000")
    assert status == 1 and "out of range" in err


def test_no_kvm_device(capsys, elf_kernel, tmp_path):
    status, err = run(capsys, "-k", str(elf_kernel), "--kvm-device", str(tmp_path / "kvm"))
    assert status == 1 and "kvm" in err.lower() and "does not exist" in err or "not found" in err


def test_not_a_kvm_device(capsys, elf_kernel):
    status, err = run(capsys, "-k", str(elf_kernel), "--kvm-device", "/dev/null")
    assert status == 1 and "/dev/null" in err


def test_kvm_permission_denied(capsys, elf_kernel, monkeypatch):
    real_open = os.open

    def deny(path, *a, **kw):
        if str(path) == "/dev/kvm":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *a, **kw)

    monkeypatch.setattr(os, "open", deny)
    status, err = run(capsys, "-k", str(elf_kernel))
    assert status == 1 and "kvm" in err and "group" in err


def test_bad_cpu_feature_names_close_match(capsys, elf_kernel):
    status, err = run(capsys, "-k", str(elf_kernel), "--cpu-features=-avx512fx")
    assert status == 1 and "avx512f" in err


def test_usage_error_is_status_2():
    r = subprocess.run(
        [sys.executable, "-m", "kvmlite.cli", "run", "-c", "two"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "invalid int value" in r.stderr

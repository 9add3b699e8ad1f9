"""``kvmlite run --vnc ...``: bad input named clearly; a password file guards the console."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmlite.cli import main

needs_kvm = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)


@pytest.fixture(scope="module")
def halt_guest(tmp_path_factory) -> Path:
    from kvmlite.testing.guests import GUEST_DIR, build_guest

    return build_guest(GUEST_DIR / "halt.c", tmp_path_factory.mktemp("halt"), kind="pvh")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--vnc", "5901"], "expected :N"),
        (["--vnc", ":99999"], "out of range"),
        (["--vnc", "unix:"], "needs a path"),
        (["--vnc-password-file", "/nonexistent"], "needs --vnc"),
        (["--vnc", ":1", "--vnc-size", "big"], "WIDTHxHEIGHT"),
        (["--vnc", ":1", "--vnc-size", "9000x10"], "must be 1.."),
    ],
)
def test_bad_vnc_options(capsys, tmp_path, args, message) -> None:
    status = main(["run", "-k", str(tmp_path / "k"), *args])
    assert status == 1 and message in capsys.readouterr().err


@needs_kvm
def test_unreadable_password_file_and_busy_socket(capsys, halt_guest, tmp_path) -> None:
    missing = tmp_path / "nope"
    status = main(["run", "-k", str(halt_guest), "-m", "32", "--vnc", f"unix:{tmp_path}/s",
                   "--vnc-password-file", str(missing)])  # fmt: skip
    assert status == 1 and "cannot read the VNC password file" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    status = main(["run", "-k", str(halt_guest), "-m", "32", "--vnc", f"unix:{tmp_path}"])
    assert status == 1 and "cannot listen on unix:" in capsys.readouterr().err


@needs_kvm
def test_password_file_guards_the_console(halt_guest, tmp_path) -> None:
    from vncdotool import api

    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    sock = tmp_path / "vnc.sock"
    argv = [sys.executable, "-m", "kvmlite.cli", "run", "--console", "null", "-k",
            str(halt_guest), "-m", "32", "--vnc", f"unix:{sock}",
            "--vnc-password-file", str(pw)]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 60
        while not sock.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < end
            time.sleep(0.05)
        client = api.connect(str(sock), password="hunter2", timeout=60)
        try:
            png = tmp_path / "s.png"
            client.captureScreen(str(png))
        finally:
            client.disconnect()
        from PIL import Image

        img = Image.open(png).convert("RGB")
        assert img.size == (800, 600) and img.getextrema() == ((0, 0), (0, 0), (0, 0))
    finally:
        proc.kill()
        proc.wait(30)

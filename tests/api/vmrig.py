"""A tiny guest under ``kvmlite run`` in a child process, for the QMP and CLI tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from kvmlite.testing.guests import GUEST_DIR, build_guest

HERE = Path(__file__).parent / "guests"
COUNTER_RE = re.compile(r"^c ([0-9a-f]{16})$")


def counter_guest(out: Path) -> Path:
    return build_guest(HERE / "counter.c", out, kind="pvh", kit_dir=GUEST_DIR)


def counts(console: Path) -> list[int]:
    """The counter values of the complete lines written so far."""
    lines = console.read_text(errors="replace").split("\n")[:-1]
    return [int(m.group(1), 16) for m in map(COUNTER_RE.match, lines) if m]


async def hang_up(qmp) -> None:
    """qemu.qmp's disconnect, where the VM may have closed the monitor first (after
    quit, reset or a poweroff it does, as QEMU does): qemu.qmp then raises EOFError."""
    try:
        await qmp.disconnect()
    except EOFError:
        pass


def poll(what: str, check, timeout: float = 60.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class KvmliteVm:
    """``kvmlite run -k GUEST --console file:... [args]`` with its own runtime base."""

    def __init__(
        self, kernel: Path, workdir: Path, *args: str, vm_id: str = "t", memory: str = "32"
    ) -> None:
        self.workdir = workdir
        self.console = workdir / "console.log"
        self.xdg = workdir / "xdg"
        self.xdg.mkdir(exist_ok=True)
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(self.xdg)}
        self.id = vm_id
        self.rundir = self.xdg / "kvmlite" / vm_id
        cmd = [sys.executable, "-m", "kvmlite.cli", "run", "-k", str(kernel), "-m", memory]
        cmd += ["--console", f"file:{self.console}", "--id", vm_id, *args]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def info(self) -> dict | None:
        try:
            return json.loads((self.rundir / "vm.json").read_text())
        except (OSError, ValueError):
            return None

    def wait_running(self) -> dict:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"kvmlite ended early: {self.proc.stderr.read()}")
            info = self.info()
            return info if info and info["state"] == "running" else None

        return poll("the VM to run", ready)

    def kvmlite(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kvmlite.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def end(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()

"""A ``kvmlite firecracker`` / ``kvmlite run --api-sock`` child process for the guest tests:
its console (stdout) collected line by line, its API socket waited for."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from api.client import request

KVM = os.access("/dev/kvm", os.R_OK | os.W_OK)


class VmProcess:
    def __init__(self, argv: list[str], sock: Path | None, prefix: Sequence[str] = ()) -> None:
        """``prefix``: e.g. ``ip netns exec NAME``, to run it in a network namespace."""
        self.sock = sock
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "kvmlite.cli", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\r\n"))
                self._cond.notify_all()

    def wait_socket(self, timeout: float = 30) -> None:
        assert self.sock is not None
        wait_for_api(self.sock, self.proc, timeout)

    def wait_lines(self, count: int, timeout: float = 60) -> list[str]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.lines) >= count, timeout):
                raise AssertionError(f"only {len(self.lines)} console lines, wanted {count}")
            return list(self.lines)

    def snapshot(self) -> list[str]:
        with self._cond:
            return list(self.lines)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self.sock is not None
        return request(self.sock, method, path, body)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout)


def wait_for_api(sock: Path, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    """Poll (bounded) until ``GET /`` on ``sock`` answers 200; fail if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"kvmlite exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if request(sock, "GET", "/")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the API socket did not come up")
        time.sleep(0.02)


def counter_numbers(lines: list[str]) -> list[int]:
    """The counter guest's numbers (complete lines only)."""
    return [int(x) for x in lines if x.isdigit()]

"""The REST API: time to a ready API socket, its cost on boot, and pause latency.

- ``kvmlite firecracker --api-sock`` from process start until ``GET /``
  answers: CPU ms of the process at that moment (the sum over its threads of
  /proc/PID/task/*/schedstat, nanosecond resolution), beside Firecracker's
  published "<= 8 CPU ms" to the API socket (SPECIFICATION.md; no Firecracker
  binary here, so this is an absolute number beside a published one), and the
  wall time.
- ``kvmlite run -k spin.elf`` to the guest's first console byte, with and
  without ``--api-sock`` (runs interleaved, as the machine's load drifts):
  what serving the API costs a boot.
- ``PATCH /vm {"state": "Paused"}`` round trip (client side, median of
  PAUSES, each followed by a resume), beside a ``GET /`` round trip (the
  API's floor).
"""

from __future__ import annotations

import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row

RUNS = 5
PAUSES = 20
FIRECRACKER_CPU_MS = 8.0


def _cpu_ms(pid: int) -> float:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass
    return total / 1e6


def _ask(path: Path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(request)
        return s.recv(65536)


GET = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def _socket_ready(tmp: Path) -> tuple[float, float]:
    """(wall ms, CPU ms) from Popen to the first answered GET /."""
    sock = tmp / "fc.sock"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvmlite.cli", "firecracker", "--api-sock", str(sock)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while True:
            try:
                if _ask(sock, GET).startswith(b"HTTP/1.1 200"):
                    break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 60:
                    raise RuntimeError("kvmlite firecracker did not serve its socket") from None
        wall = (time.perf_counter() - t0) * 1000
        return wall, _cpu_ms(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def _first_byte(argv: list[str]) -> float:
    """Wall ms from Popen to the guest's first console byte."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        if not ready or not proc.stdout.read(1):
            raise RuntimeError(f"no console output from {argv}")
        return (time.perf_counter() - t0) * 1000
    finally:
        proc.terminate()
        proc.wait(30)


def _round_trip(sock: Path, request: bytes) -> float:
    t0 = time.perf_counter()
    answer = _ask(sock, request)
    if not answer.startswith((b"HTTP/1.1 204", b"HTTP/1.1 200")):
        raise RuntimeError(f"API answered {answer[:80]!r}")
    return (time.perf_counter() - t0) * 1000


def _patch(state: str) -> bytes:
    body = f'{{"state": "{state}"}}'.encode()
    head = f"PATCH /vm HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close"
    return head.encode() + b"\r\n\r\n" + body


def rows() -> list[Row]:
    from benchmarks.run import Skip
    from kvmlite.testing.guests import GUEST_DIR, build_guest, kvmlite_argv

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ready = [_socket_ready(tmp) for _ in range(RUNS)]
        wall = statistics.median(r[0] for r in ready)
        cpu = statistics.median(r[1] for r in ready)
        out = [
            Row(
                "API socket ready after process start (CPU)",
                cpu,
                FIRECRACKER_CPU_MS,
                "ms",
                False,
                "Firecracker, published",
            ),  # fmt: skip
            Row(
                "API socket ready after process start (wall)",
                wall,
                FIRECRACKER_CPU_MS,
                "ms",
                False,
                "Firecracker CPU, published",
            ),  # fmt: skip
        ]
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            raise Skip("/dev/kvm is not usable here (only the socket rows were measured)")
        elf = build_guest(GUEST_DIR / "spin.c", tmp, kind="pvh")
        plain = kvmlite_argv(elf, "--console", "stdio")
        sock = tmp / "run.sock"
        with_api = [*plain, "--api-sock", str(sock)]
        plains, apis = [], []
        for i in range(2 * RUNS):  # interleaved, each going first half of the time
            first, second = (plain, with_api) if i % 2 else (with_api, plain)
            a, b = _first_byte(first), _first_byte(second)
            plains.append(a if first is plain else b)
            apis.append(b if first is plain else a)
        t_plain, t_api = statistics.median(plains), statistics.median(apis)
        out.append(Row("boot to first console byte, with --api-sock", t_api, t_plain, "ms",
                       False, "kvmlite run without the API"))  # fmt: skip
        proc = subprocess.Popen(with_api, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    _round_trip(sock, GET)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("kvmlite run --api-sock did not serve") from None
            gets, pauses = [], []
            for _ in range(PAUSES):
                gets.append(_round_trip(sock, GET))
                pauses.append(_round_trip(sock, _patch("Paused")))
                _round_trip(sock, _patch("Resumed"))
        finally:
            proc.terminate()
            proc.wait(30)
        out.append(Row('PATCH /vm "Paused" round trip', statistics.median(pauses),
                       statistics.median(gets), "ms", False, "GET / round trip"))  # fmt: skip
    return out

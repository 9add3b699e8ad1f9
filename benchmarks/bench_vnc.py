"""VNC while a console scrolls: bytes on the wire and the serving threads' CPU, vs QEMU.

The same PVH guest (benchmarks/guests/scroll.c) scrolls a 640x480x32 text
screen 15 times on ``kvmlite run --vnc unix:...`` and on ``qemu-system-x86_64
-accel kvm -M pc -device bochs-display -vnc unix:...``. One viewer (a small
RFB client here: 32 bpp, ZRLE, an incremental request after each update, like
a real viewer) stays connected from the guest's "ready" to its exit. Measured:
bytes the server sent, and the VNC server's CPU as the VMM process's
user+system CPU from "ready" to "done" with the viewer minus the same without
one (kvmlite's Python threads carry no OS names to tell them apart; the
guest's own emulated CPU is the bulk of both and cancels out, noisily).
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks.common import Row

HERE = Path(__file__).parent
W, H = 640, 480
FMT32 = struct.pack("!BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
TICK = os.sysconf("SC_CLK_TCK")


def _recv(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return bytes(out)


def _viewer(path: str, stop: threading.Event, counted: list[int]) -> None:
    """A viewer: 3.8, None, 32 bpp ZRLE + DesktopSize; counts every byte it receives."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(path)
    total = 0

    def take(n: int) -> bytes:
        nonlocal total
        data = _recv(s, n)
        total += n
        return data

    take(12)
    s.sendall(b"RFB 003.008\n")
    n = take(1)[0]
    take(n)
    s.sendall(b"\x01")
    take(4)
    s.sendall(b"\x01")
    take(20)
    take(struct.unpack("!I", take(4))[0])
    s.sendall(b"\x00\x00\x00\x00" + FMT32 + struct.pack("!BxHii", 2, 2, 16, -223))
    s.sendall(struct.pack("!BBHHHH", 3, 0, 0, 0, W, H))
    try:
        while not stop.is_set():
            kind = take(1)[0]
            if kind != 0:  # bell, cut text, colour map: none expected
                raise RuntimeError(f"server message {kind}")
            (count,) = struct.unpack("!xH", take(3))
            for _ in range(count):
                _, _, w, h, enc = struct.unpack("!HHHHi", take(12))
                if enc == 16:
                    take(struct.unpack("!I", take(4))[0])
                elif enc == 0:
                    take(w * h * 4)
            s.sendall(struct.pack("!BBHHHH", 3, 1, 0, 0, W, H))
    except (EOFError, OSError):
        pass
    finally:
        counted.append(total)
        s.close()


def _cpu(pid: int) -> float:
    """User + system CPU seconds of the whole process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _run(argv: list[str], sock: Path, viewer: bool) -> tuple[int, float]:
    """(bytes the viewer received, process CPU from "ready" to "done")."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        while "ready" not in proc.stdout.readline():
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited before the guest was ready")
        stop, counted = threading.Event(), [0]
        cpu0 = _cpu(proc.pid)
        t = threading.Thread(target=_viewer, args=(str(sock), stop, counted))
        if viewer:
            t.start()
        while "done" not in proc.stdout.readline():
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited before the guest was done")
        cpu = _cpu(proc.pid) - cpu0
        stop.set()
        proc.wait(60)
        if viewer:
            t.join(60)
        return counted[-1], cpu
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def rows() -> list[Row]:
    from benchmarks.run import Skip
    from kvmlite.testing.guests import GUEST_DIR, build_guest, qemu_argv

    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or not shutil.which("qemu-system-x86_64"):
        raise Skip("needs /dev/kvm and qemu-system-x86_64")
    with tempfile.TemporaryDirectory() as tmp:
        elf = build_guest(HERE / "guests" / "scroll.c", Path(tmp), kind="pvh", kit_dir=GUEST_DIR)
        ours_sock, qemu_sock = Path(tmp) / "k.sock", Path(tmp) / "q.sock"
        ours = ["kvmlite", "run", "--console", "stdio", "-k", str(elf), "-m", "64",
                "--vnc", f"unix:{ours_sock}", "--vnc-size", f"{W}x{H}"]  # fmt: skip
        theirs = qemu_argv(elf, ["-device", "bochs-display"], machine="pc")
        theirs[theirs.index("-display") + 1] = "none"
        theirs += ["-vnc", f"unix:{qemu_sock}"]
        k_bytes, k_with = _run(ours, ours_sock, True)
        _, k_without = _run(ours, ours_sock, False)
        q_bytes, q_with = _run(theirs, qemu_sock, True)
        _, q_without = _run(theirs, qemu_sock, False)
        print(f"process CPU s with/without a viewer: kvmlite {k_with:.2f}/{k_without:.2f},"
              f" QEMU {q_with:.2f}/{q_without:.2f}", file=sys.stderr)  # fmt: skip
        k_cpu, q_cpu = k_with - k_without, q_with - q_without
    return [
        Row("VNC bytes on the wire, 15 console scrolls 640x480 (ZRLE)", k_bytes / 1e6,
            q_bytes / 1e6, "MB", higher_is_better=False),
        Row("VNC CPU (process CPU with a viewer minus without), same scrolls", k_cpu, q_cpu,
            "s", higher_is_better=False),
    ]  # fmt: skip


if __name__ == "__main__":
    for r in rows():
        print(r)

"""virtio-blk throughput from a tiny guest: kvmlite ``-d`` against QEMU's virtio-blk-pci,
one row per I/O engine (``aio=threads|native|io_uring`` on both sides).

Both VMMs boot the same freestanding driver (tests/vmm/guests/virtio_blk.c, bench mode:
virtio 1.2 §5.2.6 IN/OUT requests, one split ring, MSI-X completion interrupts) with
64 MiB on /dev/kvm, against the same 256 MiB raw image. Engines, paired the way QEMU
allows them: ``threads`` and ``io_uring`` through the host page cache (QEMU
``cache=writeback``, kvmlite buffered), ``native`` with O_DIRECT on both sides (QEMU
``cache=none``, which its aio=native requires; kvmlite ``direct``). Workloads: 1 MiB
sequential reads and writes, 4 KiB random reads and writes, with one request in flight
(qd 1) and with the guest keeping up to 32 in flight (qd 32; 16 for 1 MiB, which is
what fits the guest's 32 MiB of buffers beside its rings).

Timing: the host stamps the guest's "vblk: features" line (printed on COM1 once the
device is live, just before the first request) and the process exit; that span minus the
same span of a ``count=0`` run (console output and teardown) is the I/O time. This
cancels boot cost like the plain "process start to exit minus a count=0 run", without
adding the boot's jitter (seconds, on this shared, emulated host) to sub-second signals;
the plain whole-process figures are printed to stderr beside them for comparison.
Each measurement is the median of RUNS interleaved runs (``BENCH_BLK_RUNS``;
``BENCH_BLK_ENGINES=threads,io_uring`` picks engines). The guest's own per-request CPU
time is large here (its kernel-mode code is emulated instruction by instruction,
TEST-HOST.md), and it is the same on both sides, so ratios sit nearer 1 than on real
hardware. The machine's load average is printed to stderr before and after.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from benchmarks.common import Row
from kvmlite.testing.guests import QBOOT, kvmlite_argv, qemu_argv

RUNS = int(os.environ.get("BENCH_BLK_RUNS", "5"))
ENGINES = tuple(os.environ.get("BENCH_BLK_ENGINES", "threads,native,io_uring").split(","))
#: Engines whose pair runs with O_DIRECT on both sides (QEMU: aio=native needs cache=none).
DIRECT = {"native"}
IMAGE_SIZE = 256 << 20
MARKER = b"vblk: features "
TIMEOUT_S = 120


@dataclass(frozen=True)
class Workload:
    name: str
    args: str  # the guest's bench-mode command line, less mode= and count=
    count: int
    size: int  # bytes per request
    iops: bool  # report requests/s (else MB/s)


WORKLOADS = [
    Workload("seq read 1 MiB, qd 1", "op=read size=1M seq", 1024, 1 << 20, iops=False),
    Workload("seq write 1 MiB, qd 1", "op=write size=1M seq", 1024, 1 << 20, iops=False),
    Workload("rand read 4 KiB, qd 1", "op=read size=4K rand seed=7", 1500, 4096, iops=True),
    Workload("rand write 4 KiB, qd 1", "op=write size=4K rand seed=7", 1500, 4096, iops=True),
    Workload("seq read 1 MiB, qd 16", "op=read size=1M seq qd=16", 1024, 1 << 20, iops=False),
    Workload("seq write 1 MiB, qd 16", "op=write size=1M seq qd=16", 1024, 1 << 20, iops=False),
    Workload("rand read 4 KiB, qd 32", "op=read size=4K rand seed=7 qd=32", 3000, 4096, True),
    Workload("rand write 4 KiB, qd 32", "op=write size=4K rand seed=7 qd=32", 3000, 4096, True),
]


def _io_span(cmd: list[str], ok_status: int) -> tuple[float, float]:
    """(seconds from the guest's MARKER line to the VMM's exit, seconds from process start
    to exit) for one run of ``cmd``."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        killer = threading.Timer(TIMEOUT_S, proc.kill)
        killer.start()
        start = None
        lines = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if start is None and line.startswith(MARKER):
                    start = time.perf_counter()
                lines.append(line)
            status = proc.wait()
            end = time.perf_counter()
        finally:
            killer.cancel()
        err.seek(0)
        log = b"".join(lines).decode(errors="replace") + err.read().decode(errors="replace")
    if status != ok_status or start is None or not lines[-1].startswith(b"vblk: bench done"):
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {status}):\n{log}")
    return end - start, end - t0


def _kvmlite_cmd(elf: Path, image: Path, aio: str, args: str) -> list[str]:
    direct = ",direct" if aio in DIRECT else ""
    return kvmlite_argv(elf, "-d", f"{image},format=raw,aio={aio}{direct}", "-a", args)


def _qemu_cmd(qemu: str, elf: Path, image: Path, aio: str, args: str) -> list[str]:
    cache = "none" if aio in DIRECT else "writeback"
    drive = f"file={image},if=none,id=d0,format=raw,aio={aio},cache={cache}"
    devices = ["-drive", drive, "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]
    return qemu_argv(elf, devices, qemu=qemu, firmware=QBOOT, append=args)


def _make_image(path: Path) -> None:
    """IMAGE_SIZE of non-zero data (so reads are not of holes), warm in the page cache."""
    chunk = os.urandom(1 << 20)
    with path.open("wb") as f:
        for _ in range(IMAGE_SIZE // len(chunk)):
            f.write(chunk)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def rows() -> list[Row]:
    from benchmarks.run import Skip
    from kvmlite.testing.guests import GUEST_DIR, build_guest

    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise Skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    if not QBOOT.is_file():
        raise Skip(f"{QBOOT} is missing (apt-get install qemu-system-data)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise Skip("/dev/kvm is not usable here")
    print(f"bench_blk: before: {_load()}", file=sys.stderr)
    source = GUEST_DIR.parent / "vmm" / "guests" / "virtio_blk.c"
    with tempfile.TemporaryDirectory() as tmp:
        elf = build_guest(source, Path(tmp), kind="pvh", kit_dir=GUEST_DIR)
        image = Path(tmp) / "bench.img"
        _make_image(image)
        vmms = {}
        for aio in ENGINES:
            vmms[f"kvmlite {aio}"] = (partial(_kvmlite_cmd, elf, image, aio), 0)
            vmms[f"QEMU {aio}"] = (partial(_qemu_cmd, qemu, elf, image, aio), 1)  # (0 << 1) | 1
        jobs = [("baseline", "mode=bench count=0")] + [
            (w.name, f"mode=bench {w.args} count={w.count}") for w in WORKLOADS
        ]
        spans: dict[tuple[str, str], list[float]] = {}
        whole: dict[tuple[str, str], list[float]] = {}
        for _ in range(RUNS):  # interleaved, so a change in load hits both VMMs alike
            for name, args in jobs:
                for vmm, (cmd, ok) in vmms.items():
                    io, process = _io_span(cmd(args), ok)
                    spans.setdefault((vmm, name), []).append(io)
                    whole.setdefault((vmm, name), []).append(process)
    print(f"bench_blk: after: {_load()}", file=sys.stderr)

    out = []
    for aio in ENGINES:
        for w in WORKLOADS:
            unit = "IOPS" if w.iops else "MB/s"
            name = f"virtio-blk aio={aio} {w.name} (tiny guest)"
            pair = (f"kvmlite {aio}", f"QEMU {aio}")
            k, q = (_rate(spans, vmm, w) for vmm in pair)
            out.append(Row(name, k, q, unit, higher_is_better=True, reference_name=pair[1]))
            try:
                pk, pq = (_rate(whole, vmm, w) for vmm in pair)
                plain = f"kvmlite {pk:.4g} QEMU {pq:.4g} {unit} ({pk / pq:.2f}x)"
            except RuntimeError as e:
                plain = str(e)
            print(f"bench_blk: aio={aio} {w.name}, whole minus count=0: {plain}", file=sys.stderr)
            runs = "; ".join(
                f"{vmm} " + " ".join(f"{r:.4g}" for r in _per_run(spans, vmm, w)) for vmm in pair
            )
            print(f"bench_blk: aio={aio} {w.name}, each run: {runs} {unit}", file=sys.stderr)
    return out


def _rate(spans: dict[tuple[str, str], list[float]], vmm: str, w: Workload) -> float:
    """Requests/s or MB/s from median span minus median baseline span."""
    seconds = statistics.median(spans[(vmm, w.name)]) - statistics.median(spans[(vmm, "baseline")])
    if seconds <= 0:
        raise RuntimeError(f"{vmm} {w.name}: no time left after the baseline; raise count")
    return w.count / seconds if w.iops else w.count * w.size / seconds / 1e6


def _per_run(spans: dict[tuple[str, str], list[float]], vmm: str, w: Workload) -> list[float]:
    """Each run's rate against the median baseline (the spread behind the median)."""
    base = statistics.median(spans[(vmm, "baseline")])
    out = []
    for t in spans[(vmm, w.name)]:
        sec = t - base
        out.append(
            float("nan")
            if sec <= 0
            else (w.count / sec if w.iops else w.count * w.size / sec / 1e6)
        )
    return out

"""Snapshot create and restore-to-running, for 256 MiB, 1 GiB and 4 GiB tiny guests.

The guest is tests/vmm/guests/counter.c (it counts and prints on COM1). For
each size: boot it, wait for its first lines, pause, and time
``Vmm.snapshot(dir)`` (the SnapshotCreate action: vCPU/device state, then
the memory file, with holes for RAM the guest never touched). Then, RUNS
times, in a fresh ``Vmm`` of this process (the process is started; what is
timed is what Firecracker's ``PUT /snapshot/load`` with ``resume_vm`` does):
``Vmm.restore(dir)`` until it returns with the vCPU threads running, and
until the guest's next console line appears (first guest progress).

There is no Firecracker binary here; its published restore latencies are the
reference: 13-33 ms measured by users (the row uses 13 ms, the low end), and
its design target under 5 ms (docs/snapshot.md). The guest-progress column is
dominated by this host's emulated KVM (TEST-HOST.md: every first touch of a
guest page costs about 15 us, a port exit 11-16 us).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row

RUNS = 5
SIZES = ((256 << 20, "256 MiB"), (1 << 30, "1 GiB"), (4 << 30, "4 GiB"))
#: Firecracker snapshot restore, as measured by users (low end of 13-33 ms).
FIRECRACKER_RESTORE_MS = 13.0


def _poll(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("the guest did not print in time")
        time.sleep(0.001)


def measure(size: int, work: Path) -> tuple[float, list[float], list[float], int]:
    """(create s, [restore s], [first-line s], bytes of the memory file on disk)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from vmm.counting import counter_config  # tests/vmm/counting.py

    from kvmlite.config import CharConfig
    from kvmlite.vmm.actions import Pause, Start
    from kvmlite.vmm.vmm import Vmm

    con = work / "a.txt"
    snap = work / f"snap-{size >> 20}"
    vmm = Vmm(counter_config(work, con, memory=size))
    try:
        vmm.submit(Start())
        _poll(lambda: con.read_text().count("\n") >= 3)
        vmm.submit(Pause())
        t0 = time.perf_counter()
        vmm.snapshot(snap)
        create = time.perf_counter() - t0
    finally:
        vmm.close()
    restore, first = [], []
    for i in range(RUNS):
        con_b = work / f"b{i}.txt"
        vmm = Vmm()
        try:
            t0 = time.perf_counter()
            vmm.restore(snap, console=CharConfig.parse(f"file:{con_b}"))
            t1 = time.perf_counter()
            _poll(lambda p=con_b: p.read_text().count("\n") >= 1)  # type: ignore[misc]
            t2 = time.perf_counter()
        finally:
            vmm.close()
        restore.append(t1 - t0)
        first.append(t2 - t0)
    return create, restore, first, (snap / "memory").stat().st_blocks * 512


def rows() -> list[Row]:
    import os

    from benchmarks.run import Skip

    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise Skip("needs /dev/kvm")
    out: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size, label in SIZES:
            create, restore, first, on_disk = measure(size, Path(tmp))
            ms = statistics.median(restore) * 1000
            out.append(
                Row(
                    f"snapshot restore to running, {label} (median of {RUNS})",
                    ms,
                    FIRECRACKER_RESTORE_MS,
                    "ms",
                    higher_is_better=False,
                    reference_name="Firecracker, published",
                )
            )
            print(
                f"bench_snapshot {label}: create {create * 1000:.1f} ms "
                f"(memory file {on_disk >> 10} KiB on disk), restore "
                f"{', '.join(f'{x * 1000:.1f}' for x in restore)} ms, next guest line "
                "(it prints one every ~150 ms here) "
                f"{statistics.median(first) * 1000:.1f} ms (median)",
                file=sys.stderr,
                flush=True,
            )
    return out

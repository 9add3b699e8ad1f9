"""Host CPU per request of each block I/O engine, without a guest.

A Python loop keeps ``qd`` 4 KiB requests at random offsets of a 64 MiB file in
flight through each engine (kvmlite.backends.block.engines) and prints requests/s
and the process's CPU time per request (its threads and the kernel's io_uring
workers included). Not part of ``make bench`` (there is no reference to compare
with); docs/block-engines.md uses it to choose the default engine.

    python -m benchmarks.engine_cost [PATH]
"""

from __future__ import annotations

import mmap
import os
import random
import select
import sys
import time
from typing import Any

from kvmlite.backends.block.engines import ENGINES, open_engine

SIZE = 64 << 20
BLOCK = 4096


def run(path: str, name: str, op: str, qd: int, direct: bool, count: int = 3000) -> str:
    engine = open_engine(name)
    fd = os.open(path, os.O_RDWR | (os.O_DIRECT if direct else 0))
    buf = mmap.mmap(-1, BLOCK * qd)  # page-aligned, as guest RAM is
    views = [memoryview(buf)[i * BLOCK : (i + 1) * BLOCK] for i in range(qd)]
    rng = random.Random(1)
    done = [0]

    def finished(result: Any) -> None:
        if isinstance(result, BaseException):
            raise result
        done[0] += 1

    t0, c0 = time.perf_counter(), time.process_time()
    sent = 0
    while done[0] < count:
        while sent - done[0] < qd and sent < count:
            offset = rng.randrange(SIZE // BLOCK) * BLOCK
            getattr(engine, op)(fd, offset, [views[sent % qd]], finished)
            sent += 1
        engine.commit()
        assert engine.completion_fd is not None
        select.select([engine.completion_fd], [], [], 1)
        engine.run_completions()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    engine.close()
    os.close(fd)
    views.clear()
    buf.close()
    return (
        f"{name:9s} {op:6s} qd {qd:2d} {'O_DIRECT' if direct else 'buffered'}: "
        f"{count / wall:8.0f} IOPS, {cpu / count * 1e6:6.1f} us CPU/request"
    )


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "/tmp/kvmlite-engine-cost.img"
    if not os.path.exists(path) or os.path.getsize(path) < SIZE:
        with open(path, "wb") as f:
            f.write(os.urandom(SIZE))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", file=sys.stderr)
    for direct in (False, True):
        for op in ("readv", "writev"):
            for qd in (1, 32):
                for name in ENGINES:
                    print(run(path, name, op, qd, direct), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The counter guest (tests/vmm/guests/counter.c) and reading what it printed."""

from __future__ import annotations

import re
import time
from pathlib import Path

from kvmlite.config import VmConfig
from kvmlite.testing.configs import guest_config
from vmm.tinyguests import pvh_guest  # tests/vmm/tinyguests.py

LINE = re.compile(r"count=([0-9a-f]{16})(?: ap=([0-9a-f]{16}))?\n")


def counter_config(out: Path, console: Path, *, cpus: int = 1, memory: int = 32 << 20) -> VmConfig:
    elf = pvh_guest("counter", out)
    return guest_config(
        elf, cpus=cpus, cmdline=f"cpus={cpus}", console=f"file:{console}", memory=memory
    )


def counts(text: str) -> list[tuple[int, int | None]]:
    """(count, AP count or None) of every whole line."""
    return [(int(a, 16), int(b, 16) if b else None) for a, b in LINE.findall(text)]


def wait_for_lines(path: Path, n: int, timeout: float = 60.0) -> list[tuple[int, int | None]]:
    """Poll ``path`` until it holds ``n`` whole count lines (bounded; no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        got = counts(path.read_text() if path.exists() else "")
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def assert_one_count(before: str, after: str) -> None:
    """The console of the snapshotted machine, then of the restored one, read as
    one stream (a line cut by the snapshot ends in ``after``): every count from 1
    on, once, in order (no reset, no repeat), and the AP, if any, kept counting."""
    seen = counts(before + after)
    assert len(counts(after)) >= 2, "the restored guest printed nothing"
    assert [c for c, _ in seen] == list(range(1, len(seen) + 1))
    aps = [a for _, a in seen if a is not None]
    assert aps == sorted(aps)
    if aps:
        last_before = [a for _, a in counts(before) if a is not None][-1]
        assert aps[-1] > last_before, "the AP did not count after the restore"

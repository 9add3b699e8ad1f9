"""Progress of the guest kernel's build: compiled objects counted against the expected number.

Kbuild prints one line per compiled object (``  CC      kernel/fork.o``,
``  AS      arch/x86/entry/entry_64.o``; scripts/Makefile.build's
``quiet_cmd_cc_o_c`` and ``quiet_cmd_as_o_S``). ``BuildProgress`` counts
those lines; the expected number is how many objects the last build of the
tree left (``count_objects``, kept in ``<cache>/kernel/objects.count``),
else ``DEFAULT_EXPECTED_OBJECTS`` (what this recipe's minimal.config
compiles with linux-source-6.1). An incremental build compiles fewer and
ends before 100 %, when ``finish()`` shows 100 %.

On a terminal the progress is a tqdm bar; elsewhere (logs, CI) one plain
line per 10 %.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import IO, Any

#: Objects a full build of the default guest compiles (1253 .o files in the
#: build tree, less 42 host programs'), measured on linux-source-6.1.
DEFAULT_EXPECTED_OBJECTS = 1211

_OBJECT_LINE = re.compile(rb"^\s+(?:CC|AS)(?: \[M\])?\s+\S+\.o\s*$")
#: Host tools' objects (HOSTCC) are in the tree but not on CC lines.
_HOST_DIRS = ("scripts", "tools", "arch/x86/tools")


def is_object_line(line: bytes) -> bool:
    return _OBJECT_LINE.match(line) is not None


def count_objects(build_dir: Path) -> int:
    """Target objects in a build tree (what a full build compiles)."""
    host = [build_dir / d for d in _HOST_DIRS]
    return sum(1 for p in build_dir.rglob("*.o") if not any(p.is_relative_to(h) for h in host))


def expected_objects(count_file: Path) -> int:
    try:
        value = int(count_file.read_text().strip())
    except (OSError, ValueError):
        return DEFAULT_EXPECTED_OBJECTS
    return value if value > 0 else DEFAULT_EXPECTED_OBJECTS


class BuildProgress:
    """Feed it the build's output lines; it shows the share of objects compiled."""

    def __init__(
        self,
        expected: int,
        *,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        label: str = "[kvmlite kernel] building",
    ) -> None:
        self.expected = max(1, expected)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.label = label
        self.done = 0
        self._decile = 0
        self._bar: Any = None
        if self.tty:
            from tqdm import tqdm  # noqa: PLC0415

            self._bar = tqdm(
                total=self.expected, desc=label, unit="obj", file=self.stream, leave=True
            )

    @property
    def percent(self) -> int:
        """Share compiled, at most 99 until ``finish()`` (the link is still to come)."""
        return min(99, self.done * 100 // self.expected)

    def line(self, line: bytes) -> None:
        if is_object_line(line):
            self.advance()

    def advance(self) -> None:
        self.done += 1
        if self._bar is not None:
            if self.done <= self.expected:
                self._bar.update(1)
            return
        decile = self.percent // 10
        if decile > self._decile:
            self._decile = decile
            self._say(f"{decile * 10}% ({self.done}/{self.expected} objects)")

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.update(self._bar.total - self._bar.n)
            self._bar.close()
        else:
            self._say(f"100% ({self.done} objects compiled)")

    def abort(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def _say(self, text: str) -> None:
        print(f"{self.label}: {text}", file=self.stream, flush=True)

"""Run every benchmarks/bench_*.py module and print one ratio table.

Each module exposes ``rows() -> list[Row]``; a module whose reference tool is
missing raises ``Skip`` with the reason, which is printed under the table.
Usage: ``python -m benchmarks.run [NAME ...]`` (``make bench``).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from pathlib import Path

from benchmarks.common import Row, format_table


class Skip(Exception):
    """A benchmark that cannot run here; the message says why."""


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    rows: list[Row] = []
    notes: list[str] = []
    failed = False
    for name in names:
        mod = importlib.import_module(f"benchmarks.{name}")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(mod.rows())
        except Skip as e:
            notes.append(f"{name}: skipped: {e}")
        except Exception:
            failed = True
            notes.append(f"{name}: FAILED\n{traceback.format_exc()}")
    print(format_table(rows))
    for n in notes:
        print(n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

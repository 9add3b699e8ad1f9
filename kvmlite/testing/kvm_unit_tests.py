"""Run kvm-unit-tests (the KVM project's own suite) under kvmlite and under QEMU.

``python -m kvmlite.testing.kvm_unit_tests --tarball T --build B --out O``
extracts the vendored suite into ``B``, builds it (``./configure
--arch=x86_64 && make``), runs its ``run_tests.sh`` once through the
QEMU-compatible shim tools/kvm-unit-tests/qemu (so the tests run on kvmlite)
and once with the host's QEMU (``ACCEL=kvm``), and writes ``O/table.md``:
test, QEMU's verdict, kvmlite's verdict, kvmlite's time. ``make
kvm-unit-tests`` calls it; tests/test_kvm_unit_tests.py uses the same
functions on a subset.

A verdict is run_tests.sh's own: PASS, SKIP, FAIL, or TIMEOUT (its FAIL with
"timeout"); the detail is what it printed in parentheses. A test counts
against kvmlite only where QEMU passes it here and kvmlite does not.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIM = REPO / "tools" / "kvm-unit-tests" / "qemu"
TARBALL = REPO.parent / "shared" / "vendor" / "kvm-unit-tests-1da1819e.tar.gz"
_RESULT = re.compile(r"^(PASS|FAIL|SKIP) (\S+)(?: \((.*)\))?\s*$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Verdict:
    verdict: str  # PASS, FAIL, SKIP, TIMEOUT
    detail: str = ""


def build_suite(tarball: Path, build: Path) -> Path:
    """Extract (once) and build the suite; returns its source directory."""
    src = build / "kvm-unit-tests"
    if not (src / "Makefile").exists():
        build.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(build, filter="data")
    if not (src / "x86" / "msr.flat").exists():
        subprocess.run(["./configure", "--arch=x86_64"], cwd=src, check=True)
        subprocess.run(["make", f"-j{os.cpu_count() or 1}"], cwd=src, check=True)
    return src


def parse_results(text: str) -> dict[str, Verdict]:
    """run_tests.sh's result lines, by test name."""
    out = {}
    for line in _ANSI.sub("", text).splitlines():
        m = _RESULT.match(line.strip())
        if not m:
            continue
        verdict, name, detail = m.group(1), m.group(2), m.group(3) or ""
        if verdict == "FAIL" and detail.startswith("timeout"):
            verdict = "TIMEOUT"
        out[name] = Verdict(verdict, detail)
    return out


def run_suite(
    src: Path,
    *,
    qemu: str | None,
    tests: Sequence[str] = (),
    timeout: str | None = None,
    times_file: Path | None = None,
    log: Path | None = None,
) -> dict[str, Verdict]:
    """``run_tests.sh`` with ``QEMU=qemu`` (None: the host's QEMU) on ``tests`` (all if empty)."""
    env = dict(os.environ, ACCEL="kvm")
    env.pop("QEMU", None)
    env.pop("TIMEOUT", None)
    if qemu is not None:
        env["QEMU"] = qemu
    if timeout:
        env["TIMEOUT"] = timeout
    if times_file is not None:  # the shim runs in the suite's directory
        env["KVMLITE_SHIM_TIMES"] = str(Path(times_file).resolve())
    proc = subprocess.run(
        ["./run_tests.sh", *tests],
        cwd=src,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if log is not None:
        log.write_text(proc.stdout)
    return parse_results(proc.stdout)


def read_times(path: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                try:
                    times[parts[0]] = float(parts[1])
                except ValueError:
                    continue
    return times


def table(qemu: dict[str, Verdict], kvmlite: dict[str, Verdict], times: dict[str, float]) -> str:
    """The markdown table: every test either run saw, in the suite's order."""
    names = list(dict.fromkeys([*qemu, *kvmlite]))
    rows = [
        "| test | QEMU | kvmlite | kvmlite time (s) | kvmlite detail |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        q, k = qemu.get(n, Verdict("-")), kvmlite.get(n, Verdict("-"))
        t = f"{times[n]:.1f}" if n in times else ""
        flag = " **(counts)**" if q.verdict == "PASS" and k.verdict != "PASS" else ""
        rows.append(f"| {n} | {q.verdict} | {k.verdict}{flag} | {t} | {k.detail} |")
    both = sum(1 for n in names if qemu.get(n, Verdict("-")).verdict == "PASS")
    ok = sum(
        1
        for n in names
        if qemu.get(n, Verdict("-")).verdict == "PASS"
        and kvmlite.get(n, Verdict("-")).verdict == "PASS"
    )
    kvl = sum(1 for v in kvmlite.values() if v.verdict == "PASS")
    rows.append("")
    rows.append(f"QEMU passes {both} tests; kvmlite passes {ok} of those ({kvl} in all).")
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tarball", type=Path, default=TARBALL)
    p.add_argument("--build", type=Path, default=REPO / "build")
    p.add_argument("--out", type=Path, default=REPO / "build" / "kvm-unit-tests-results")
    p.add_argument(
        "--timeout",
        default=os.environ.get("KUT_TIMEOUT") or None,
        help="TIMEOUT for every test (default: each test's own, 90 s)",
    )
    p.add_argument("--skip-qemu", action="store_true", help="reuse the last QEMU results")
    p.add_argument("tests", nargs="*", help="test names (default: all)")
    args = p.parse_args(argv)
    src = build_suite(args.tarball, args.build)
    args.out.mkdir(parents=True, exist_ok=True)
    times = args.out / "kvmlite-times.txt"
    times.unlink(missing_ok=True)
    t0 = time.monotonic()
    kvl = run_suite(
        src,
        qemu=str(SHIM),
        tests=args.tests,
        timeout=args.timeout,
        times_file=times,
        log=args.out / "kvmlite.log",
    )
    t1 = time.monotonic()
    qemu_log = args.out / "qemu.log"
    if args.skip_qemu and qemu_log.exists():
        qemu = parse_results(qemu_log.read_text())
    else:
        qemu = run_suite(src, qemu=None, tests=args.tests, timeout=args.timeout, log=qemu_log)
    t2 = time.monotonic()
    text = table(qemu, kvl, read_times(times))
    text += f"\nWall time: kvmlite run {t1 - t0:.0f} s, QEMU run {t2 - t1:.0f} s.\n"
    (args.out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""kvm-unit-tests, the KVM project's own suite, on kvmlite: the subset QEMU passes here.

The suite (vendored as ../shared/vendor/kvm-unit-tests-1da1819e.tar.gz, or
$KUT_TARBALL) is built once under build/ and run with its own run_tests.sh
through the QEMU-compatible shim, exactly as ``make kvm-unit-tests`` does.
The tests listed below pass under QEMU -accel kvm on this host and under
kvmlite (docs/kvm-unit-tests.md has the whole table), and take about a
minute here in all; any other verdict is a regression. Needs /dev/kvm (skips
only when it is absent), gcc and make.
"""

import os
from pathlib import Path

import pytest

from kvmlite.testing.kvm_unit_tests import REPO, SHIM, TARBALL, build_suite, run_suite

SUBSET = [
    "smptest",
    "smptest3",
    "vmexit_cpuid",
    "vmexit_inl_pmtimer",
    "vmexit_ipi",
    "idt_test",
    "setjmp",
    "rmap_chain",
]

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm")


def test_subset_passes_as_under_qemu(tmp_path):
    tarball = Path(os.environ.get("KUT_TARBALL", TARBALL))
    assert tarball.exists(), f"the vendored kvm-unit-tests tarball is missing: {tarball}"
    src = build_suite(tarball, REPO / "build")
    results = run_suite(
        src,
        qemu=str(SHIM),
        tests=SUBSET,
        timeout="90s",
        times_file=tmp_path / "times",
        log=tmp_path / "log",
    )
    verdicts = {name: results[name].verdict if name in results else "missing" for name in SUBSET}
    assert verdicts == dict.fromkeys(SUBSET, "PASS"), (tmp_path / "log").read_text()[-3000:]


@pytest.mark.slow
def test_realmode_passes(tmp_path):
    """realmode.flat (real-mode emulation, and the BIOS timer tick that wakes its halts)
    takes about 40 s here, so it is slow; QEMU passes it on this host too."""
    tarball = Path(os.environ.get("KUT_TARBALL", TARBALL))
    assert tarball.exists(), f"the vendored kvm-unit-tests tarball is missing: {tarball}"
    src = build_suite(tarball, REPO / "build")
    log = tmp_path / "log"
    results = run_suite(src, qemu=str(SHIM), tests=["realmode"], timeout="300s", log=log)
    assert results.get("realmode") is not None, log.read_text()[-3000:]
    assert results["realmode"].verdict == "PASS", log.read_text()[-3000:]

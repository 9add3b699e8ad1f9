"""The default guest really boots: QEMU is the judge (kvmlite's own VMM is
tested with the same images in its own boot tests).

Slow: the first run builds the kernel (minutes); each boot under QEMU's
software emulation takes seconds, under this host's emulated KVM tens of
seconds (TEST-HOST.md).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlite.guestimage import (
    BASE_CMDLINE,
    CHECK_DONE,
    PVM_HOST_CMDLINE,
    READY_BANNER,
    SHELL_PROMPT,
    DefaultGuest,
    check_guest,
    default_guest,
)
from kvmlite.guestimage.hostquirks import pvm_host_detected
from kvmlite.testing.expect import Expect
from kvmlite.vmm.hostquirks import host_tsc_khz

pytestmark = pytest.mark.slow

QEMU = "qemu-system-x86_64"


@pytest.fixture(scope="module")
def shell_guest() -> DefaultGuest:
    return default_guest(progress=True)


@pytest.fixture(scope="module")
def checking_guest() -> DefaultGuest:
    return check_guest(progress=True)


def _host_tsc_khz() -> int:
    khz = host_tsc_khz()
    if khz is None:
        pytest.fail("no 'cpu MHz' in /proc/cpuinfo")
    return khz


def tcg_cmdline(cmdline: str, machine: str) -> str:
    """microvm has no HPET or PM timer, so Linux calibrates the TSC against
    the PIT alone, and under TCG on a loaded host that fails ("Unable to
    calibrate against PIT") and the boot stalls. TCG's guest TSC runs at the
    host TSC's rate, so tell the guest that rate instead."""
    if machine != "microvm":
        return cmdline
    return f"{cmdline} tsc_early_khz={_host_tsc_khz()}"


def _qemu(
    kernel: Path,
    initrd: Path,
    cmdline: str,
    *,
    machine: str = "microvm",
    accel: str = "tcg",
    cpu: str | None = None,
    smp: int = 1,
    mem: int = 128,
) -> Expect:
    if shutil.which(QEMU) is None:
        pytest.fail(f"{QEMU} missing: apt-get install qemu-system-x86")
    argv = [
        QEMU, "-accel", accel, "-M", machine, "-m", str(mem), "-smp", str(smp),
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
        "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
    ]  # fmt: skip
    if cpu:
        argv += ["-cpu", cpu]
    return Expect.spawn(argv)


@pytest.fixture
def consoles() -> Iterator[list[Expect]]:
    opened: list[Expect] = []
    yield opened
    for c in opened:
        c.close()


def _report(c: Expect, timeout: float) -> dict[str, list[str]]:
    m = c.expect(rf"((?:KVMLITE-CHECK \S+=.*\r?\n)+){CHECK_DONE}", timeout=timeout)
    facts: dict[str, list[str]] = {}
    for line in m.group(1).decode().splitlines():
        key, _, value = line.removeprefix("KVMLITE-CHECK ").partition("=")
        facts.setdefault(key, []).append(value.strip())
    return facts


@pytest.mark.parametrize("machine", ["microvm", "q35"])
def test_busybox_shell_under_tcg(
    shell_guest: DefaultGuest, consoles: list[Expect], machine: str
) -> None:
    start = time.monotonic()
    cmdline = tcg_cmdline(BASE_CMDLINE, machine)
    c = _qemu(shell_guest.vmlinux, shell_guest.initrd, cmdline, machine=machine)
    consoles.append(c)
    c.expect(READY_BANNER, timeout=120)
    c.expect(re.escape(SHELL_PROMPT), timeout=60)
    print(f"\n{machine}/tcg: busybox prompt after {time.monotonic() - start:.1f} s")
    c.sendline("echo result=$((6 * 7)); sleep 1 & jobs")
    c.expect(r"result=42", timeout=30)
    c.expect(r"\[1\]\+?\s+Running", timeout=30)  # job control works: cttyhack gave a ctty
    c.sendline("cat /proc/cmdline")
    c.expect(re.escape(cmdline), timeout=30)
    c.sendline("poweroff -f")
    c.wait_eof(timeout=60)
    assert c.process is not None and c.process.wait(30) == 0


def test_check_init_report_under_tcg(checking_guest: DefaultGuest, consoles: list[Expect]) -> None:
    start = time.monotonic()
    cmdline = tcg_cmdline(BASE_CMDLINE, "microvm")
    c = _qemu(checking_guest.vmlinux, checking_guest.initrd, cmdline, smp=2, mem=128)
    consoles.append(c)
    facts = _report(c, timeout=120)
    print(f"\nmicrovm/tcg: check_init done after {time.monotonic() - start:.1f} s")
    assert facts["cpus_online"] == ["0-1"]
    memtotal = int(facts["memtotal_kb"][0])
    assert 64 * 1024 < memtotal <= 128 * 1024
    assert facts["cmdline"] == [cmdline]
    e820 = facts["e820"]
    assert e820 != ["absent"] and any(r.endswith(":System RAM") for r in e820)
    c.wait_eof(timeout=60)
    assert c.process is not None and c.process.wait(30) == 0


def test_lz4_bzimage_boots_under_tcg(checking_guest: DefaultGuest, consoles: list[Expect]) -> None:
    assert checking_guest.bzimage.read_bytes()[0x202:0x206] == b"HdrS"
    c = _qemu(checking_guest.bzimage, checking_guest.initrd, BASE_CMDLINE, machine="q35")
    consoles.append(c)
    facts = _report(c, timeout=180)
    assert facts["cmdline"] == [BASE_CMDLINE]
    c.wait_eof(timeout=60)


def _kvm_usable() -> bool:
    return Path("/dev/kvm").exists()


@pytest.mark.kvm
def test_check_init_under_this_hosts_kvm(
    checking_guest: DefaultGuest, consoles: list[Expect]
) -> None:
    if not _kvm_usable():
        pytest.skip("/dev/kvm is absent")
    cmdline = BASE_CMDLINE + (" " + PVM_HOST_CMDLINE if pvm_host_detected() else "")
    # microvm has no HPET/PM timer: without a known TSC rate the PIT-only
    # calibration can fail under load and the boot stalls (see tcg_cmdline).
    cmdline += f" tsc_early_khz={_host_tsc_khz()}"
    start = time.monotonic()
    # The PVM KVM refuses QEMU's write of IA32_ARCH_CAPABILITIES (MSR 0x10a).
    c = _qemu(checking_guest.vmlinux, checking_guest.initrd, cmdline, accel="kvm",
              cpu="host,-arch-capabilities", mem=64)  # fmt: skip
    consoles.append(c)
    # ~23 s on an idle emulated KVM (TEST-HOST.md); minutes on a loaded one.
    facts = _report(c, timeout=400)
    print(f"\nmicrovm/kvm: check_init done after {time.monotonic() - start:.1f} s")
    assert facts["cmdline"] == [cmdline]
    c.wait_eof(timeout=120)

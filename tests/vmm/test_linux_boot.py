"""Slow: the minimal Linux kernel booted under ``kvmlite run`` on /dev/kvm.

On the development machines' emulated KVM each boot takes tens of seconds
(see shared/TEST-HOST.md and the README's table); on a real host, about a
second. Each test checks what the guest itself reports.
"""

from __future__ import annotations

import os
import re
import sys
import time

import pytest

from kvmlite.testing.expect import Expect

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs /dev/kvm"),
]

BOOT_TIMEOUT = 600  # seconds; a loaded 2-core emulated host is slow


@pytest.fixture(scope="module")
def check_guest():
    from kvmlite.guestimage import check_guest

    return check_guest(progress=False)


def kvmlite(*args: object) -> Expect:
    argv = [sys.executable, "-m", "kvmlite.cli", "run", "--console", "stdio", *map(str, args)]
    return Expect.spawn(argv)


def check_report(console: Expect) -> dict[str, list[str]]:
    """Collect the check_init report (tests/guests/linux/check_init.c)."""
    console.expect("KVMLITE-CHECK-DONE", BOOT_TIMEOUT)
    facts: dict[str, list[str]] = {}
    for m in re.finditer(rb"KVMLITE-CHECK (\w+)=([^\r\n]*)", bytes(console.transcript)):
        facts.setdefault(m.group(1).decode(), []).append(m.group(2).decode())
    return facts


def run_check(*args: object) -> tuple[dict[str, list[str]], int]:
    """``kvmlite run ARGS`` with a check_init guest, to its end: the report, the exit status."""
    console = kvmlite(*args)
    try:
        facts = check_report(console)
        console.wait_eof(120)
        status = console.process.wait(30)
    finally:
        console.close()
    return facts, status


def boot_and_check(kernel, initrd, marker: str) -> tuple[dict[str, list[str]], int, float]:
    t0 = time.monotonic()
    facts, status = run_check("-k", kernel, "-i", initrd, "-m", "64", "-c", "2", "-a", marker)
    return facts, status, time.monotonic() - t0


def assert_machine_seen(facts: dict[str, list[str]], marker: str) -> None:
    assert facts["cpus_online"] == ["0-1"]
    memtotal = int(facts["memtotal_kb"][0])
    assert 40 * 1024 < memtotal <= 64 * 1024  # 64 MiB minus the kernel's own
    assert marker in facts["cmdline"][0]
    ram = [e for e in facts.get("e820", []) if e.endswith(":System RAM")]
    top = max(int(e.split("-")[1].split(":")[0], 16) for e in ram)
    assert top == 64 * 1024 * 1024 - 1  # the e820 map covers all of guest RAM


def test_pvh_vmlinux_two_cpus(check_guest):
    facts, status, took = boot_and_check(check_guest.vmlinux, check_guest.initrd, "kvmlite_pvh=1")
    assert_machine_seen(facts, "kvmlite_pvh=1")
    assert status == 0  # reboot(RB_POWER_OFF) -> ACPI S5 -> kvmlite exits 0
    print(f"PVH vmlinux: powered off after {took:.1f} s")


def test_bzimage_lz4_64bit_boot_protocol(check_guest):
    facts, status, took = boot_and_check(check_guest.bzimage, check_guest.initrd, "kvmlite_bz=1")
    assert_machine_seen(facts, "kvmlite_bz=1")
    assert status == 0
    print(f"bzImage: powered off after {took:.1f} s")


def test_busybox_shell_runs_a_typed_command():
    from kvmlite.guestimage import default_guest

    default_guest(progress=False)
    t0 = time.monotonic()
    console = kvmlite("-m", "64", "-c", "2")  # no -k: kvmlite's default guest
    try:
        console.expect("kvmlite guest ready", BOOT_TIMEOUT)
        console.expect(r"# ", 300)
        ready = time.monotonic() - t0
        console.sendline("echo $((6*7))kvm")
        console.expect("42kvm", 300)
        console.sendline("poweroff -f")
        console.wait_eof(300)
        assert console.process.wait(30) == 0
    finally:
        console.close()
    print(f"busybox shell after {ready:.1f} s")

"""Tiny guests booted through the whole ``kvmlite run`` path on /dev/kvm."""

from __future__ import annotations

import os

import pytest

from .tinyguests import bzimage_guest, kvmlite_run, pvh_guest

pytestmark = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("guests")


def test_pvh_hello_serial_and_cmdline(out):
    from kvmlite.testing.guests import GUEST_DIR, build_guest

    elf = build_guest(GUEST_DIR / "hello.c", out, kind="pvh")
    r = kvmlite_run("-k", elf, "-m", "32", "-a", "marker=42")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("hello\npvh console=ttyS0 ")
    assert "marker=42" in r.stdout


def test_bzimage_64bit_entry(out):
    r = kvmlite_run("-k", bzimage_guest(out), "-m", "32", "-a", "bz=1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bzimage e820=" in r.stdout and "bz=1" in r.stdout


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_smp_bring_up_by_init_sipi(out, cpus):
    elf = pvh_guest("smp", out / f"smp{cpus}")
    r = kvmlite_run("-k", elf, "-m", "32", "-c", cpus, "-a", f"cpus={cpus}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"smp mask={(1 << cpus) - 1:016x}" in r.stdout


def test_interrupts_lapic_timer_pit_ioapic_uart(out):
    elf = pvh_guest("irq", out / "irq")
    r = kvmlite_run("-k", elf, "-m", "32", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-3:] == ["lapic ok", "pit ok", "uart ok"]


def test_debug_exit_status_and_crash_report(out):
    from kvmlite.testing.guests import GUEST_DIR, build_guest

    r = kvmlite_run("-k", build_guest(GUEST_DIR / "crash.c", out, kind="pvh"), "-m", "32")
    assert r.returncode == 4  # a triple fault is reported as a crash
    assert "triple fault" in r.stderr and "RIP" in r.stderr


def test_mmio_and_pio_exits_without_devices_read_all_ones(out):
    from kvmlite.testing.guests import GUEST_DIR, build_guest

    r = kvmlite_run("-k", build_guest(GUEST_DIR / "mmio.c", out, kind="pvh"), "-m", "32")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("guest,status", [("reset", 3), ("poweroff", 0)])
def test_reset_and_acpi_poweroff_exit_statuses(out, guest, status):
    elf = pvh_guest(guest, out / guest)
    r = kvmlite_run("-k", elf, "-m", "32", "-v")
    assert r.returncode == status, r.stderr
    assert ("i8042 reset" if guest == "reset" else "ACPI poweroff") in r.stderr


def test_second_uart_goes_to_its_own_backend(out, tmp_path):
    elf = pvh_guest("com2", out / "com2")
    log = tmp_path / "com2.log"
    r = kvmlite_run("-k", elf, "-m", "32", "--serial", f"file:{log}")
    assert r.returncode == 0, r.stderr
    assert log.read_text() == "com2 ok\n"
    assert "scratch=000000000000005a" in r.stdout
    r = kvmlite_run("-k", elf, "-m", "32")  # no --serial: no COM2 on the bus
    assert "scratch=00000000000000ff" in r.stdout

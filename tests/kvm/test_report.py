"""crash_report() on real crashes (triple fault, emulation failure) and synthetic exits."""

from __future__ import annotations

from pathlib import Path

from kvmlite.kvm import (
    FailEntryExit,
    HltExit,
    InternalErrorExit,
    IoExit,
    ShutdownExit,
    SystemEventExit,
)
from kvmlite.kvm.report import crash_report


def test_ud2_without_idt_is_a_triple_fault(machine, flat_guests: dict[str, Path]) -> None:
    machine.load_flat(flat_guests["crash"])
    first = machine.vcpu.run()
    assert isinstance(first, IoExit) and bytes(first.data) == b"C"
    ex = machine.vcpu.run()
    assert isinstance(ex, ShutdownExit)
    report = crash_report(machine.vcpu, ex, machine.mem)
    rip = machine.vcpu.get_regs().rip
    assert "KVM_EXIT_SHUTDOWN" in report and "triple fault" in report
    assert "64-bit long mode" in report
    assert f"RIP: {rip:#018x}" in report
    assert "code at RIP (16 bytes): 0f 0b" in report  # ud2 at RIP
    assert "CR0=0x8" in report or "CR0=0xe" in report  # PG|PE set
    assert "EFER=0x500" in report  # LME|LMA
    assert "CS: selector=0x0008" in report
    assert "IDT: base=0x0 limit=0x0" in report
    for reg in ("RAX=", "R15=", "CR3=", "CR4="):
        assert reg in report


# Real mode at 0x1000: fwait; hlt
FWAIT_HLT = bytes.fromhex("9bf4")


def test_instruction_the_emulator_cannot_run(machine) -> None:
    """On this development host KVM cannot emulate FWAIT (TEST-HOST.md) and says so with
    an internal error; a KVM that runs it on hardware reaches the HLT instead."""
    machine.load_real_mode(FWAIT_HLT)
    ex = machine.vcpu.run()
    if isinstance(ex, HltExit):
        return
    assert isinstance(ex, InternalErrorExit)
    report = crash_report(machine.vcpu, ex, machine.mem)
    assert "KVM_EXIT_INTERNAL_ERROR" in report
    assert "KVM_INTERNAL_ERROR_EMULATION (1)" in report
    assert "real mode" in report
    assert "code at RIP (16 bytes): 9b f4" in report


def test_synthetic_exits_are_named(machine) -> None:
    machine.load_real_mode(b"\xf4")
    # emulation_failure: flags (INSTRUCTION_BYTES), then insn_size and insn_bytes[15].
    raw = bytes([2, 0x0F, 0x0B]) + bytes(13)
    words = (int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little"))
    emu = InternalErrorExit(1, (1, *words))
    report = crash_report(machine.vcpu, emu)
    assert "instruction bytes (from KVM): 0f 0b" in report
    assert "code at RIP" not in report  # no memory given
    assert "KVM_INTERNAL_ERROR_DELIVERY_EV (3)" in crash_report(
        machine.vcpu, InternalErrorExit(3, (0x80000B0E,))
    )
    fail = crash_report(machine.vcpu, FailEntryExit(0x21, 3))
    assert "KVM_EXIT_FAIL_ENTRY" in fail and "0x21" in fail and "host CPU 3" in fail
    ev = crash_report(machine.vcpu, SystemEventExit(3, 0))
    assert "KVM_SYSTEM_EVENT_CRASH (3)" in ev


def test_unmapped_rip_is_reported(machine) -> None:
    machine.load_real_mode(b"\xf4")
    regs = machine.vcpu.get_regs()
    sregs = machine.vcpu.get_sregs()
    sregs.cs.base = 0xE0000000  # outside the 4 MiB of RAM
    machine.vcpu.set_sregs(sregs)
    machine.vcpu.set_regs(regs)
    report = crash_report(machine.vcpu, ShutdownExit(), machine.mem)
    assert "outside guest RAM" in report


def test_report_of_a_closed_vcpu_does_not_raise(make_machine) -> None:
    m = make_machine()
    vcpu = m.vcpu
    m.vm.close()
    report = crash_report(vcpu, ShutdownExit(), m.mem)
    assert "KVM_EXIT_SHUTDOWN" in report
    assert "registers unavailable" in report and "closed" in report

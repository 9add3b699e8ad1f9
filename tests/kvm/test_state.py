"""get/set round trips of every vCPU and VM state kvmlite saves (snapshot, migration)."""

from __future__ import annotations

from kvmlite.kvm.structs import (
    KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER,
    KVM_MP_STATE_HALTED,
    KVM_MP_STATE_RUNNABLE,
)


def test_regs_round_trip(machine) -> None:
    regs = machine.vcpu.get_regs()
    for i, name in enumerate(("rax", "rbx", "r8", "r15", "rsp")):
        setattr(regs, name, 0x1111_0000_0000 + i)
    regs.rip, regs.rflags = 0x4321, 0x202
    machine.vcpu.set_regs(regs)
    assert bytes(machine.vcpu.get_regs()) == bytes(regs)


def test_sregs_round_trip(machine) -> None:
    sregs = machine.vcpu.get_sregs()
    sregs.cs.base, sregs.cs.selector = 0xF0000, 0xF000
    sregs.ds.base, sregs.ds.selector = 0x1230, 0x123
    sregs.gdt.base, sregs.gdt.limit = 0x5000, 0x27
    sregs.cr2 = 0xABC000
    machine.vcpu.set_sregs(sregs)
    got = machine.vcpu.get_sregs()
    assert (got.cs.base, got.cs.selector, got.ds.base, got.ds.selector) == (
        0xF0000,
        0xF000,
        0x1230,
        0x123,
    )
    assert (got.gdt.base, got.gdt.limit, got.cr2) == (0x5000, 0x27, 0xABC000)
    assert bytes(got) == bytes(sregs)


def test_fpu_round_trip(machine) -> None:
    # MXCSR is left out: this development host's KVM_GET_FPU always reports it as 0
    # (TEST-HOST.md's emulated KVM); KVM_GET/SET_XSAVE carry it correctly.
    fpu = machine.vcpu.get_fpu()
    fpu.fcw = 0x27F
    fpu.xmm[3][0] = 0x5A
    fpu.fpr[1][2] = 0x77
    machine.vcpu.set_fpu(fpu)
    got = machine.vcpu.get_fpu()
    assert (got.fcw, got.xmm[3][0], got.fpr[1][2]) == (0x27F, 0x5A, 0x77)


def test_msrs_round_trip(machine) -> None:
    values = {0x174: 0x10, 0x175: 0xFFFF_8000_0000_1000, 0x176: 0xFFFF_8000_0000_2000}
    machine.vcpu.set_msrs(values)
    assert machine.vcpu.get_msrs(values) == values


def test_unknown_msr_is_named(machine) -> None:
    import pytest

    from kvmlite.errors import KvmError

    with pytest.raises(KvmError, match="0xdeadbeef"):
        machine.vcpu.get_msrs([0x174, 0xDEADBEEF])


def test_lapic_round_trip(make_machine) -> None:
    m = make_machine(irqchip=True)
    lapic = m.vcpu.get_lapic()
    lapic.set_reg(0x80, 0x20)  # TPR
    lapic.set_reg(0xF0, 0x1FF)  # SVR: enabled, spurious vector 0xff
    m.vcpu.set_lapic(lapic)
    got = m.vcpu.get_lapic()
    assert (got.get_reg(0x80), got.get_reg(0xF0)) == (0x20, 0x1FF)


def test_xsave_and_xcrs_round_trip(machine) -> None:
    xsave = machine.vcpu.get_xsave()
    assert xsave.region[0] & 0xFFFF == 0x37F  # legacy area starts with the reset FCW
    # XSTATE_BV (byte 512) says which components the buffer holds: x87 and SSE here,
    # or KVM resets them to their init state instead of loading them.
    xsave.region[128] |= 0b11
    xsave.region[0] = (xsave.region[0] & ~0xFFFF) | 0x27F  # FCW
    xsave.region[6] = 0x7F80  # MXCSR: round toward zero
    xsave.region[40] = 0x5A5A  # low dword of XMM0 (offset 160)
    machine.vcpu.set_xsave(xsave)
    got = machine.vcpu.get_xsave()
    assert (got.region[0] & 0xFFFF, got.region[6], got.region[40]) == (0x27F, 0x7F80, 0x5A5A)
    xcrs = machine.vcpu.get_xcrs()
    assert xcrs.nr_xcrs >= 1 and xcrs.xcrs[0].xcr == 0 and xcrs.xcrs[0].value & 1
    machine.vcpu.set_xcrs(xcrs)
    assert machine.vcpu.get_xcrs().xcrs[0].value == xcrs.xcrs[0].value


def test_vcpu_events_round_trip(machine) -> None:
    events = machine.vcpu.get_vcpu_events()
    events.nmi.masked = 1
    machine.vcpu.set_vcpu_events(events)
    got = machine.vcpu.get_vcpu_events()
    assert got.nmi.masked == 1
    assert got.exception.injected == 0


def test_mp_state_round_trip(make_machine) -> None:
    m = make_machine(irqchip=True)
    assert m.vcpu.get_mp_state() == KVM_MP_STATE_RUNNABLE
    m.vcpu.set_mp_state(KVM_MP_STATE_HALTED)
    assert m.vcpu.get_mp_state() == KVM_MP_STATE_HALTED


def test_clock_round_trip(machine) -> None:
    first = machine.vm.get_clock()
    machine.vm.set_clock(first)
    later = machine.vm.get_clock()
    assert later.clock >= first.clock
    first.clock += 10**12  # move the guest clock 1000 s ahead
    first.flags = 0
    machine.vm.set_clock(first)
    assert machine.vm.get_clock().clock >= first.clock


def test_irqchip_round_trip(make_machine) -> None:
    m = make_machine(irqchip=True)
    pic = m.vm.get_irqchip(KVM_IRQCHIP_PIC_MASTER)
    pic.chip.pic.imr = 0xA5
    m.vm.set_irqchip(pic)
    assert m.vm.get_irqchip(KVM_IRQCHIP_PIC_MASTER).chip.pic.imr == 0xA5
    ioapic = m.vm.get_irqchip(KVM_IRQCHIP_IOAPIC)
    entry = ioapic.chip.ioapic.redirtbl[4]
    entry.fields.vector, entry.fields.mask, entry.fields.dest_id = 0x34, 0, 1
    m.vm.set_irqchip(ioapic)
    got = m.vm.get_irqchip(KVM_IRQCHIP_IOAPIC).chip.ioapic.redirtbl[4]
    assert (got.fields.vector, got.fields.mask, got.fields.dest_id) == (0x34, 0, 1)
    assert got.bits == entry.bits


def test_pit2_round_trip(make_machine) -> None:
    m = make_machine(irqchip=True)
    m.vm.create_pit2()
    pit = m.vm.get_pit2()
    ch = pit.channels[2]
    ch.count, ch.mode, ch.rw_mode, ch.gate = 0x1234, 3, 3, 1
    m.vm.set_pit2(pit)
    got = m.vm.get_pit2().channels[2]
    assert (got.count, got.mode, got.rw_mode, got.gate) == (0x1234, 3, 3, 1)


def test_debugregs_round_trip(machine) -> None:
    dr = machine.vcpu.get_debugregs()
    dr.db[0], dr.db[3] = 0x1000, 0x2000
    dr.dr7 = 0x401  # L0 enabled (bit 10 is reserved-one)
    machine.vcpu.set_debugregs(dr)
    got = machine.vcpu.get_debugregs()
    assert (got.db[0], got.db[3], got.dr7) == (0x1000, 0x2000, 0x401)


# Real mode: mov eax,0x40000000; cpuid; hlt
CPUID_HYPERVISOR_LEAF = bytes.fromhex("66b8000000400fa2f4")


def test_set_cpuid2_is_what_the_guest_sees(kvm, machine) -> None:
    from kvmlite.kvm import HltExit

    entries = kvm.supported_cpuid()
    leaf = next(e for e in entries if e.function == 0x40000000)
    leaf.ebx, leaf.ecx, leaf.edx = (
        int.from_bytes(part, "little") for part in (b"KVML", b"ITE!", b"TEST")
    )
    machine.vcpu.set_cpuid2(entries)
    machine.load_real_mode(CPUID_HYPERVISOR_LEAF)
    assert isinstance(machine.vcpu.run(), HltExit)
    regs = machine.vcpu.get_regs()
    signature = b"".join(r.to_bytes(4, "little") for r in (regs.rbx, regs.rcx, regs.rdx))
    assert signature == b"KVMLITE!TEST"

"""VcpuState/VmState: save a running guest, serialise, restore into a new VM, continue."""

from __future__ import annotations

import pytest

from kvmlite import state as codec
from kvmlite.errors import StateError
from kvmlite.kvm import IoExit
from kvmlite.kvm.state import VcpuState, VmState, restore_vcpu, restore_vm, save_vcpu, save_vm


def _outs(m, n):
    """Run until ``n`` OUTs to port 0x510 were seen; return their values."""
    seen = []
    while len(seen) < n:
        ex = m.vcpu.run()
        assert isinstance(ex, IoExit), ex
        if ex.port == 0x511 and not ex.is_write:
            ex.data[:] = (1000).to_bytes(4, "little")  # the loop count
        elif ex.port == 0x510:
            seen.append(ex.data[0])
    return seen


def test_guest_continues_in_a_new_vm_after_restore(make_machine, flat_guests):
    a = make_machine(irqchip=True)
    a.vm.create_pit2()
    a.load_flat(flat_guests["pio_loop"])
    assert _outs(a, 300) == [i & 0xFF for i in range(300)]

    vcpu_blob = codec.dumps(save_vcpu(a.vcpu))
    vm_blob = codec.dumps(save_vm(a.vm))
    ram = a.mem.read(0, a.mem.size)

    b = make_machine(irqchip=True)
    b.vm.create_pit2()
    b.mem.write(0, ram)
    from kvmlite.testing.guests import enter_flat

    enter_flat(b.vcpu)  # the same CPUID as the source: restore needs it
    restore_vm(b.vm, codec.loads(VmState, vm_blob))
    restore_vcpu(b.vcpu, codec.loads(VcpuState, vcpu_blob))
    assert _outs(b, 5) == [300 & 0xFF, 301 & 0xFF, 302 & 0xFF, 303 & 0xFF, 304 & 0xFF]


def test_restore_refuses_wrong_index_and_sizes(make_machine):
    m = make_machine(irqchip=True)
    m.vm.create_pit2()
    s = save_vcpu(m.vcpu)
    import dataclasses

    with pytest.raises(StateError, match="vCPU 1"):
        restore_vcpu(m.vcpu, dataclasses.replace(s, index=1))
    with pytest.raises(StateError, match="regs"):
        restore_vcpu(m.vcpu, dataclasses.replace(s, regs=s.regs[:-1]))
    v = save_vm(m.vm)
    with pytest.raises(StateError, match="chip"):
        restore_vm(m.vm, dataclasses.replace(v, pic_master=v.ioapic))

"""The boot state on a real vCPU: tiny hand-assembled kernels enter through both protocols.

Needs /dev/kvm (skips only when it is absent). The "kernels" are synthetic bzImage/ELF
files whose entry code reports, over port 0x3f8, what it finds in the boot data.
"""

from __future__ import annotations

import os

import pytest

from kvmlite.arch.x86 import cpu, msrs
from kvmlite.arch.x86.boot import load_kernel
from kvmlite.arch.x86.cpufeatures import parse_cpu_features
from kvmlite.arch.x86.cpuid import apply_cpuid, build_cpuid, supported_from_kvm
from kvmlite.memory import MIB, GuestMemory

from .images import make_bzimage, make_elf, pvh_note

pytestmark = pytest.mark.kvm

# 64-bit: mov al,[rsi+0x210] (type_of_loader); mov dx,0x3f8; out dx,al;
#         mov rax,0x123456789; shr rax,32; out dx,al; hlt
LONG_ENTRY = bytes.fromhex("8a8610020000 66baf803 ee 48b88967452301000000 48c1e820 ee f4")
# 32-bit: mov eax,[ebx] (hvm_start_info.magic); mov dx,0x3f8; out dx,eax; hlt
PVH_ENTRY = bytes.fromhex("8b03 66baf803 ef f4")


@pytest.fixture
def machine():
    if not os.path.exists("/dev/kvm"):
        pytest.skip("/dev/kvm is absent on this machine")
    from kvmlite.kvm import Kvm

    kvm = Kvm()
    vm = kvm.create_vm()
    mem = GuestMemory.create(64 * MIB)
    r = mem.regions[0]
    vm.set_user_memory_region(0, 0, r.size, r.host_address(), 0)
    vcpu = vm.create_vcpu(0)
    ov = parse_cpu_features("-xsave")
    apply_cpuid(vcpu, build_cpuid(supported_from_kvm(kvm.supported_cpuid()), 0, 1, ov))
    msrs.apply_boot_msrs(vcpu, kvm.msr_index_list())
    yield mem, vcpu
    vcpu.close()
    mem.close()
    kvm.close()


def run_outputs(vcpu, limit=20):
    from kvmlite.kvm import HltExit, IoExit

    out = []
    for _ in range(limit):
        ex = vcpu.run()
        if isinstance(ex, HltExit):
            return out
        assert isinstance(ex, IoExit) and ex.port == 0x3F8 and ex.is_write, ex
        out.append(bytes(ex.data))
    raise AssertionError(f"no hlt after {limit} exits: {out}")


def test_bzimage_long_mode_entry(machine, tmp_path):
    mem, vcpu = machine
    kernel = bytes(0x200) + LONG_ENTRY
    (tmp_path / "bz").write_bytes(make_bzimage(kernel=kernel))
    plan = load_kernel(mem, tmp_path / "bz", None, "console=ttyS0", num_vcpus=1)
    cpu.apply_boot_state(vcpu, plan.cpu_state())
    assert run_outputs(vcpu) == [b"\xff", b"\x01"]
    s = vcpu.get_sregs()
    assert s.efer & cpu.EFER_LMA and s.cs.l == 1 and s.cs.selector == 0x10


def test_pvh_entry(machine, tmp_path):
    mem, vcpu = machine
    (tmp_path / "vmlinux").write_bytes(
        make_elf([(0x1000000, PVH_ENTRY, 4096)], notes=pvh_note(0x1000000), elf64=False)
    )
    plan = load_kernel(mem, tmp_path / "vmlinux", None, "", num_vcpus=1)
    cpu.apply_boot_state(vcpu, plan.cpu_state())
    assert run_outputs(vcpu) == [(0x336EC578).to_bytes(4, "little")]
    s = vcpu.get_sregs()
    assert not s.cr0 & cpu.CR0_PG and s.cs.db == 1

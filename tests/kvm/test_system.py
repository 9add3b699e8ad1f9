"""Kvm: opening /dev/kvm, capabilities, supported CPUID, MSR list, ioctl errors."""

from __future__ import annotations

import errno
import os

import pytest

from kvmlite.errors import KvmError
from kvmlite.kvm import Kvm, KvmIoctlError
from kvmlite.kvm import constants as c


def test_missing_device_gives_advice(tmp_path) -> None:
    with pytest.raises(KvmError, match="modprobe kvm_intel"):
        Kvm(str(tmp_path / "no-kvm"))


def test_permission_denied_gives_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    def deny(*args: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(KvmError, match="'kvm' group"):
        Kvm("/dev/kvm")


def test_not_a_kvm_device_is_refused() -> None:
    with pytest.raises(KvmError, match="/dev/null is not a KVM device") as info:
        Kvm("/dev/null")
    cause = info.value.__cause__
    assert isinstance(cause, KvmIoctlError) and cause.errno == errno.ENOTTY


def test_capabilities_and_mmap_size(kvm: Kvm) -> None:
    assert kvm.vcpu_mmap_size >= 4096
    assert kvm.check_extension(c.KVM_CAP_USER_MEMORY) > 0
    assert kvm.check_extension(c.KVM_CAP_IMMEDIATE_EXIT) > 0
    assert kvm.check_extension(0x7FFFFFF0) == 0  # no such capability


def test_supported_cpuid_returns_independent_copies(kvm: Kvm) -> None:
    first = kvm.supported_cpuid()
    functions = {e.function for e in first}
    assert 0 in functions and 0x80000001 in functions
    leaf0 = next(e for e in first if e.function == 0)
    vendor = b"".join(r.to_bytes(4, "little") for r in (leaf0.ebx, leaf0.edx, leaf0.ecx))
    assert vendor in (b"GenuineIntel", b"AuthenticAMD", b"HygonGenuine")
    leaf0.eax = 0xDEAD
    again = next(e for e in kvm.supported_cpuid() if e.function == 0)
    assert again.eax != 0xDEAD


def test_msr_index_list(kvm: Kvm) -> None:
    msrs = kvm.msr_index_list()
    assert len(msrs) == len(set(msrs)) > 5
    assert 0x174 in msrs  # MSR_IA32_SYSENTER_CS: every x86 KVM saves it


def test_failed_ioctl_names_itself(kvm: Kvm) -> None:
    vm = kvm.create_vm()
    try:
        vm.create_vcpu(0)
        with pytest.raises(KvmIoctlError, match="KVM_CREATE_VCPU") as info:
            vm.create_vcpu(0)
        assert info.value.errno == errno.EEXIST
    finally:
        vm.close()


def test_tss_and_identity_map_addresses(kvm: Kvm) -> None:
    vm = kvm.create_vm()
    try:
        # 0xfffbd000 does not fit a C int: this goes through libc's ioctl.
        vm.set_identity_map_addr(0xFFFBC000)
        vm.set_tss_addr(0xFFFBD000)
        vcpu = vm.create_vcpu(0)
        with pytest.raises(KvmIoctlError, match="KVM_SET_IDENTITY_MAP_ADDR"):
            vm.set_identity_map_addr(0xFFFBC000)  # only allowed before vCPUs exist
        assert vcpu.index == 0
    finally:
        vm.close()


def test_vcpu_close_with_a_live_exit_view(kvm: Kvm) -> None:
    from kvmlite.memory import GuestMemory

    vm = kvm.create_vm()
    mem = GuestMemory.create(1 << 20)
    try:
        vm.set_user_memory_region(0, 0, mem.size, mem.regions[0].host_address())
        mem.write(0x1000, bytes.fromhex("b041e6f8f4"))  # mov al,'A'; out 0xf8,al; hlt
        vcpu = vm.create_vcpu(0)
        sregs = vcpu.get_sregs()
        sregs.cs.base, sregs.cs.selector = 0, 0
        vcpu.set_sregs(sregs)
        regs = vcpu.get_regs()
        regs.rip, regs.rflags = 0x1000, 2
        vcpu.set_regs(regs)
        ex = vcpu.run()
        assert bytes(ex.data) == b"A"  # type: ignore[union-attr]
        vm.close()  # closes the vCPU while `ex.data` still views its kvm_run page
        assert vcpu.fd == -1 and vm.fd == -1
        del ex
    finally:
        vm.close()
        mem.close()

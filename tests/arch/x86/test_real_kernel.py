"""The loaders against the real default guest kernel (built from linux-source-6.1 by
kvmlite.guestimage: minutes the first time, cached after), and an early boot on /dev/kvm
that reads the kernel's own account of what it was given (earlyprintk on COM1)."""

from __future__ import annotations

import os
import time

import pytest

from kvmlite.arch.x86 import cpu, msrs
from kvmlite.arch.x86.boot import load_kernel
from kvmlite.arch.x86.cpufeatures import parse_cpu_features
from kvmlite.arch.x86.cpuid import apply_cpuid, build_cpuid, supported_from_kvm
from kvmlite.arch.x86.elf import parse_elf
from kvmlite.arch.x86.pvh import find_pvh_entry
from kvmlite.memory import MIB, GuestMemory

pytestmark = pytest.mark.slow

COM1 = 0x3F8
LSR_THRE_TEMT = 0x60


@pytest.fixture(scope="module")
def guest():
    from kvmlite.guestimage import default_guest

    return default_guest(progress=False)


def test_real_vmlinux_has_pvh_entry(guest):
    mem = GuestMemory.from_buffer(bytearray(64 * MIB))
    data = guest.vmlinux.read_bytes()
    image = parse_elf(data, mem, str(guest.vmlinux))
    assert image.elf64 and image.segments[0].paddr == 0x1000000
    entry = find_pvh_entry(image)
    assert image.segments[0].paddr <= entry < image.end


def test_real_bzimage_header(guest):
    mem = GuestMemory.create(64 * MIB)
    plan = load_kernel(mem, guest.bzimage, guest.initrd, "console=ttyS0", num_vcpus=1)
    assert plan.mode == "long64" and plan.entry == plan.kernel_addr + 0x200
    hdr = mem.read(0x7000 + 0x202, 4)
    assert hdr == b"HdrS" and mem.read_int(0x7000 + 0x206, 2) >= 0x20F
    assert plan.initrd_addr >= plan.kernel_end
    mem.close()


def early_boot(
    kernel, initrd, cmdline: str, until: list[bytes], timeout: float, acpi: bool = True
) -> bytes:
    """Boot on one vCPU with an in-kernel irqchip; a minimal 16550 (THR/LSR) on COM1."""
    from kvmlite.kvm import IoExit, Kvm, MmioExit

    if not os.path.exists("/dev/kvm"):
        pytest.skip("/dev/kvm is absent on this machine")
    kvm = Kvm()
    vm = kvm.create_vm()
    vm.set_tss_addr(0xFFFBD000)
    vm.create_irqchip()
    vm.create_pit2()
    mem = GuestMemory.create(64 * MIB)
    r = mem.regions[0]
    vm.set_user_memory_region(0, 0, r.size, r.host_address(), 0)
    vcpu = vm.create_vcpu(0)
    apply_cpuid(vcpu, build_cpuid(supported_from_kvm(kvm.supported_cpuid()), 0, 1,
                                  parse_cpu_features("-xsave")))  # fmt: skip
    msrs.apply_boot_msrs(vcpu, kvm.msr_index_list())
    plan = load_kernel(mem, kernel, initrd, cmdline, num_vcpus=1, acpi=acpi)
    cpu.apply_boot_state(vcpu, plan.cpu_state())
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not all(u in out for u in until):
            ex = vcpu.run()
            if isinstance(ex, IoExit):
                if ex.is_write:
                    if ex.port == COM1:
                        out += ex.data
                else:
                    fill = LSR_THRE_TEMT if ex.port == COM1 + 5 else 0xFF
                    ex.data[:] = bytes([fill]) * len(ex.data)
            elif isinstance(ex, MmioExit):
                if not ex.is_write:
                    ex.data[:] = b"\xff" * len(ex.data)
            else:
                raise AssertionError(f"unexpected exit {ex!r}; serial so far:\n{out.decode()}")
    finally:
        vcpu.close()
        mem.close()
        kvm.close()
    return bytes(out)


@pytest.mark.kvm
def test_pvh_early_boot_reads_our_tables(guest):
    """The kernel's own log of the boot data: e820, cmdline, initrd, MP table, ACPI, MADT."""
    from kvmlite.guestimage import guest_cmdline

    cmdline = guest_cmdline("earlyprintk=serial,ttyS0 kvmlite_marker=1")
    until = [b"hotplug CPUs"]
    log = early_boot(guest.vmlinux, guest.initrd, cmdline, until, timeout=120)
    text = log.decode(errors="replace")
    expected = [
        "Linux version",
        "kvmlite_marker=1",  # the command line reached the kernel
        "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
        "BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved",
        "BIOS-e820: [mem 0x0000000000100000-0x0000000003ffffff] usable",
        "RAMDISK: [mem",
        "found SMP MP-table at [mem 0x000f0000-0x000f000f]",
        "ACPI: RSDP 0x00000000000E0000 000024 (v02 KVMLTE)",
        "ACPI: PM-Timer IO Port: 0x608",
        "ACPI: LAPIC_NMI (acpi_id[0xff] dfl dfl lint[0x1])",
        "IOAPIC[0]: apic_id 1, version 17, address 0xfec00000, GSI 0-23",
        "ACPI: INT_SRC_OVR (bus 0 bus_irq 0 global_irq 2 dfl dfl)",
        "ACPI: INT_SRC_OVR (bus 0 bus_irq 9 global_irq 9 high level)",
        "ACPI: Using ACPI (MADT) for SMP configuration information",
        "smpboot: Allowing 1 CPUs, 0 hotplug CPUs",
    ]
    for line in expected:
        assert line in text, f"{line!r} missing from:\n{text}"
    for sig in ("XSDT", "FACP", "DSDT", "FACS", "APIC"):
        assert text.count(f"ACPI: {sig} 0x") == 1, sig


@pytest.mark.kvm
def test_bzimage_early_boot(guest):
    """The 64-bit boot protocol: the decompressor runs, then the kernel reads our zero page."""
    from kvmlite.guestimage import guest_cmdline

    cmdline = guest_cmdline("earlyprintk=serial,ttyS0 kvmlite_marker=2")
    log = early_boot(
        guest.bzimage,
        guest.initrd,
        cmdline,
        [b"ACPI: RSDP 0x00000000000E0000 000024 (v02 KVMLTE)"],
        timeout=240,
    )
    text = log.decode(errors="replace")
    for line in (
        "kvmlite_marker=2",
        "BIOS-e820: [mem 0x0000000000100000-0x0000000003ffffff] usable",
        "RAMDISK: [mem",
        "ACPI: RSDP 0x00000000000E0000",
    ):
        assert line in text, f"{line!r} missing from:\n{text}"


@pytest.mark.kvm
def test_pvh_early_boot_mp_table_without_acpi(guest):
    """With ACPI off the kernel takes the CPUs and the IOAPIC from our MP table."""
    from kvmlite.guestimage import guest_cmdline

    cmdline = guest_cmdline("earlyprintk=serial,ttyS0")
    log = early_boot(guest.vmlinux, None, cmdline, [b"hotplug CPUs"], timeout=120, acpi=False)
    text = log.decode(errors="replace")
    for line in (
        "Intel MultiProcessor Specification v1.4",
        "MPTABLE: OEM ID: KVMLITE",
        "MPTABLE: Product ID: KVMLITE MP",
        "MPTABLE: APIC at: 0xFEE00000",
        "IOAPIC[0]: apic_id 1, version 17, address 0xfec00000, GSI 0-23",
        "Processors: 1",
        "smpboot: Allowing 1 CPUs, 0 hotplug CPUs",
    ):
        assert line in text, f"{line!r} missing from:\n{text}"
    assert "ACPI: RSDP" not in text

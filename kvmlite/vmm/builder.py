"""build_vm(config) -> Machine, straight-line, top to bottom (DESIGN.md rule 3).

The order is the boot order: memory, vCPUs' VM, irqchip/PIT, buses and
devices, firmware tables and kernel, vCPU state. Anything that fails undoes
what was built before it (an ExitStack), so a bad kernel or a missing
/dev/kvm leaves nothing behind (rule 7).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

from kvmlite.arch.x86 import layout
from kvmlite.bus import Bus
from kvmlite.errors import ConfigError
from kvmlite.memory import GuestMemory
from kvmlite.vmm import hostquirks
from kvmlite.vmm.config import VmConfig
from kvmlite.vmm.eventloop import EventLoop
from kvmlite.vmm.irq import KvmIrqLine
from kvmlite.vmm.machine import ExitReason, Machine

log = logging.getLogger(__name__)

# Addresses KVM needs for its own use on Intel (three pages for the TSS, one
# for the EPT identity map); they sit just below the 4 GiB BIOS area, where
# QEMU puts them too, inside the 32-bit hole and never in RAM.
TSS_ADDR = 0xFFFBD000
IDENTITY_MAP_ADDR = 0xFFFBC000

#: (base port, IRQ) of COM1..COM4.
COM_PORTS = ((0x3F8, 4), (0x2F8, 3), (0x3E8, 4), (0x2E8, 3))

# Local APIC register offsets and LVT delivery modes (Intel SDM vol. 3, 10.5.1)
APIC_LVT0 = 0x350
APIC_LVT1 = 0x360
APIC_MODE_EXTINT = 0x7 << 8
APIC_MODE_NMI = 0x4 << 8


class LockedDevice:
    """Serialises a device's register access between vCPU and I/O threads."""

    __slots__ = ("device", "lock", "read", "write")

    def __init__(self, device: Any) -> None:
        self.device = device
        self.lock = threading.Lock()

        def read(offset: int, size: int) -> bytes:
            with self.lock:
                return device.read(offset, size)

        def write(offset: int, data: bytes) -> None:
            with self.lock:
                device.write(offset, data)

        self.read = read
        self.write = write


def build_vm(config: VmConfig, *, console: Any = None) -> Machine:
    """Build the machine described by ``config``; nothing runs yet."""
    config.validate()
    quirks = hostquirks.resolve(config.host_quirks)
    kernel, initrd, cmdline = _kernel_and_cmdline(config)
    cmdline = config.full_cmdline(quirks.cmdline) if not cmdline else cmdline

    from kvmlite.arch.x86.boot import load_kernel
    from kvmlite.arch.x86.cpu import apply_boot_state
    from kvmlite.arch.x86.cpuid import build_cpuid, parse_cpu_features
    from kvmlite.arch.x86.msrs import boot_msrs
    from kvmlite.backends.char import parse_console_spec
    from kvmlite.kvm import Kvm

    features = parse_cpu_features(config.cpu_features)  # bad names fail before KVM opens

    with contextlib.ExitStack() as undo:
        kvm = Kvm(config.kvm_path)
        undo.callback(kvm.close)
        memory = GuestMemory.create(config.memory)
        undo.callback(memory.close)
        vm = kvm.create_vm()
        undo.callback(vm.close)
        vm.set_tss_addr(TSS_ADDR)
        vm.set_identity_map_addr(IDENTITY_MAP_ADDR)
        vm.create_irqchip()
        vm.create_pit2()
        for slot, region in enumerate(memory.regions):
            vm.set_user_memory_region(slot, region.gpa, region.size, region.host_address())

        machine = Machine(kvm, vm, memory, [], Bus(), Bus(), EventLoop())
        if console is None:
            console = parse_console_spec(config.console)
        undo.callback(console.close)
        machine.closers.append(console.close)

        _add_legacy_devices(machine, config, console)

        plan = load_kernel(memory, kernel, initrd, cmdline, num_vcpus=config.cpus, acpi=config.acpi)

        supported = kvm.supported_cpuid()
        msr_list = set(kvm.msr_index_list())
        msrs = {k: v for k, v in boot_msrs().items() if k in msr_list}
        for index in range(config.cpus):
            vcpu = vm.create_vcpu(index)
            machine.vcpus.append(vcpu)
            undo.callback(vcpu.close)
            vcpu.set_cpuid2(
                build_cpuid(
                    supported,
                    index,
                    config.cpus,
                    features,
                    advertise_xsaveerptr=quirks.advertise_xsaveerptr,
                )
            )
            vcpu.set_msrs(msrs)
            _setup_lapic(vcpu)
            if index == 0:
                apply_boot_state(vcpu, plan.cpu_state)
        machine.devices["boot"] = plan
        machine.cmdline = cmdline
        undo.pop_all()
    return machine


def _kernel_and_cmdline(config: VmConfig) -> tuple[Path, Path | None, str]:
    """The kernel to boot: the user's, or kvmlite's default guest."""
    if config.kernel is not None:
        return config.kernel, config.initrd, ""
    if config.initrd is not None:
        raise ConfigError("an initrd (-i) needs a kernel (-k)")
    from kvmlite.guestimage import default_guest

    guest = default_guest()
    return guest.vmlinux, guest.initrd, ""


def _setup_lapic(vcpu: Any) -> None:
    """LINT0 as ExtINT and LINT1 as NMI, the wiring of a PC (MP spec 5.1)."""
    lapic = vcpu.get_lapic()
    regs = bytearray(bytes(lapic.regs))
    for off, mode in ((APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)):
        value = int.from_bytes(regs[off : off + 4], "little")
        value = (value & ~0x10700) | mode  # unmask, set the delivery mode
        regs[off : off + 4] = value.to_bytes(4, "little")
    lapic.regs[:] = list(regs) if not isinstance(lapic.regs, bytes) else regs
    vcpu.set_lapic(lapic)


def _add_legacy_devices(machine: Machine, config: VmConfig, console: Any) -> None:
    from kvmlite.devices.legacy.acpi_pm import AcpiPm
    from kvmlite.devices.legacy.debug_exit import DEBUG_EXIT_PORT, DebugExit
    from kvmlite.devices.legacy.i8042 import I8042
    from kvmlite.devices.legacy.rtc import CmosRtc
    from kvmlite.devices.legacy.serial import Serial16550

    vm, pio, loop = machine.vm, machine.pio_bus, machine.loop
    for n in range(config.serial_ports):
        base, irq = COM_PORTS[n]
        out = console.write if n == 0 else (lambda data: None)
        serial = Serial16550(KvmIrqLine(vm, irq), out)
        locked = LockedDevice(serial)
        pio.insert(locked, base, 8)
        machine.devices[f"serial{n}"] = serial
        if n == 0:
            _wire_console_input(machine, console, serial, locked.lock)

    i8042 = I8042(reset=lambda: machine.request_exit(ExitReason.REBOOT, message="i8042 reset"))
    pio.insert(LockedDevice(i8042), 0x60, 5)
    machine.devices["i8042"] = i8042

    rtc = CmosRtc()
    rtc.set_memory_size(config.memory)
    pio.insert(LockedDevice(rtc), 0x70, 2)
    machine.devices["rtc"] = rtc

    pio.insert(
        DebugExit(lambda v: machine.request_exit(ExitReason.DEBUG_EXIT, v)), DEBUG_EXIT_PORT, 4
    )

    pm = AcpiPm(
        KvmIrqLine(vm, layout.SCI_IRQ),
        on_poweroff=lambda: machine.request_exit(ExitReason.POWEROFF, message="ACPI poweroff"),
    )
    pio.insert(LockedDevice(pm), layout.PM1A_EVT_BLK, 12)
    machine.devices["acpi_pm"] = pm
    del loop


def _wire_console_input(machine: Machine, console: Any, serial: Any, lock: threading.Lock) -> None:
    """Console input -> UART receive FIFO, keeping what does not fit for later."""
    fd = console.fileno()
    if fd is None:
        return
    loop = machine.loop
    pending = bytearray()

    def feed() -> None:
        with lock:
            taken = serial.enqueue_input(bytes(pending))
        del pending[:taken]
        if pending:
            loop.call_later(0.005, feed)  # the guest has not drained its FIFO yet

    def on_readable() -> None:
        data = console.read_available()
        if not data:
            loop.remove_reader(fd)  # EOF on the console input
            return
        was_empty = not pending
        pending.extend(data)
        if was_empty:
            feed()

    loop.add_reader(fd, on_readable)

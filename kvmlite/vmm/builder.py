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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvmlite.arch.x86 import layout
from kvmlite.bus import Bus
from kvmlite.errors import ConfigError
from kvmlite.memory import PCI_HOLE_START, GuestMemory
from kvmlite.vmm import hostquirks
from kvmlite.vmm.config import VmConfig
from kvmlite.vmm.console_io import ConsoleInput, tolerant, wire_virtio_console_input
from kvmlite.vmm.eventloop import EventLoop
from kvmlite.vmm.gsi import GsiRouter
from kvmlite.vmm.irq import KvmIrqLine
from kvmlite.vmm.locking import LockedDevice
from kvmlite.vmm.machine import ExitReason, Machine
from kvmlite.vmm.network import add_networks
from kvmlite.vmm.virtio import MMIO_BASE, VirtioWiring

log = logging.getLogger(__name__)

# Addresses KVM needs for its own use on Intel (three pages for the TSS, one
# for the EPT identity map); they sit just below the 4 GiB BIOS area, where
# QEMU puts them too, inside the 32-bit hole and never in RAM.
TSS_ADDR = 0xFFFBD000
IDENTITY_MAP_ADDR = 0xFFFBC000

#: ECAM for PCI bus 0 at the bottom of the 32-bit hole; BARs go above it, up
#: to the virtio-mmio devices below the IOAPIC (the firmware tables describe
#: the same window: ECAM is cut out of it, and reserved).
ECAM_BASE = PCI_HOLE_START
PCI_BAR_WINDOW = (PCI_HOLE_START + (1 << 20), MMIO_BASE - PCI_HOLE_START - (1 << 20))

#: (base port, IRQ) of COM1..COM4.
COM_PORTS = ((0x3F8, 4), (0x2F8, 3), (0x3E8, 4), (0x2E8, 3))

# Local APIC register offsets and LVT delivery modes (Intel SDM vol. 3, 10.5.1)
APIC_LVT0 = 0x350
APIC_LVT1 = 0x360
APIC_MODE_EXTINT = 0x7 << 8
APIC_MODE_NMI = 0x4 << 8


def build_vm(config: VmConfig, *, console: Any = None) -> Machine:
    """Build the machine described by ``config``; nothing runs yet."""
    config.validate()
    quirks = hostquirks.resolve(config.host_quirks)
    kernel, initrd, cmdline = _kernel_and_cmdline(config)
    cmdline = config.full_cmdline(quirks.cmdline) if not cmdline else cmdline

    from kvmlite.arch.x86.acpi.tables import Ecam
    from kvmlite.arch.x86.boot import load_kernel
    from kvmlite.arch.x86.cpu import apply_boot_state, initial_mp_state
    from kvmlite.arch.x86.cpufeatures import parse_cpu_features
    from kvmlite.arch.x86.cpuid import apply_cpuid, build_cpuid, supported_from_kvm
    from kvmlite.arch.x86.msrs import boot_msrs, filter_supported
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
        gsi_router = GsiRouter(vm)
        gsi_router.commit()
        for slot, region in enumerate(memory.regions):
            vm.set_user_memory_region(slot, region.gpa, region.size, region.host_address())

        machine = Machine(kvm, vm, memory, [], Bus(), Bus(), EventLoop())
        undo.callback(machine.loop.close)
        undo.callback(_run_closers, machine)  # backends opened from here on
        machine.devices["gsi"] = gsi_router
        if console is None:
            console = parse_console_spec(
                config.console,
                on_quit=lambda: machine.request_exit(ExitReason.QUIT, message="quit from console"),
            )
        machine.closers.append(console.close)

        _add_legacy_devices(machine, config, console)
        pci = _add_pci(machine)
        wiring = VirtioWiring(machine, gsi_router, pci)
        machine.closers.append(wiring.close)
        _add_virtio_devices(machine, config, wiring)
        pci.allocate_bars(mmio32=PCI_BAR_WINDOW)
        pci.connect_intx(lambda gsi: KvmIrqLine(vm, gsi))
        # The firmware tables want pins 0..3 (INTA..INTD); PciRoot counts from 1.
        pci_routes = [(r.slot, r.pin - 1, r.gsi) for r in pci.interrupt_routes()]
        if wiring.cmdline:
            cmdline = " ".join([cmdline, *wiring.cmdline])

        plan = load_kernel(
            memory,
            kernel,
            initrd,
            cmdline,
            num_vcpus=config.cpus,
            acpi=config.acpi,
            pci_routes=pci_routes,
            ecam=Ecam(ECAM_BASE, last_bus=0),
            mmio32=(PCI_HOLE_START, MMIO_BASE - 1),
        )

        supported = supported_from_kvm(kvm.supported_cpuid())
        msrs = filter_supported(boot_msrs(), kvm.msr_index_list())
        for index in range(config.cpus):
            vcpu = vm.create_vcpu(index)
            machine.vcpus.append(vcpu)
            undo.callback(vcpu.close)
            entries = build_cpuid(supported, index, config.cpus, features)
            if quirks.advertise_xsaveerptr:
                entries = hostquirks.advertise_xsaveerptr(entries)
            apply_cpuid(vcpu, entries)
            vcpu.set_msrs(msrs)
            vcpu.set_mp_state(initial_mp_state(index))  # APs wait for INIT/SIPI
            _setup_lapic(vcpu)
            if index == 0:
                apply_boot_state(vcpu, plan.cpu_state())
        machine.devices["boot"] = plan
        machine.cmdline = cmdline
        undo.pop_all()
    return machine


def _run_closers(machine: Machine) -> None:
    """Undo for a build that failed half-way: close what was opened."""
    while machine.closers:
        try:
            machine.closers.pop()()
        except Exception:
            log.exception("error while undoing a partial build")


def _add_virtio_devices(machine: Machine, config: VmConfig, wiring: VirtioWiring) -> None:
    """Disks, NICs, entropy and console, on the transport the user chose."""
    wanted = config.disks or config.nets or config.rng is not None
    if not (wanted or config.virtio_console or config.virtio_ports):
        return
    from kvmlite.backends.block import open_image
    from kvmlite.backends.char import parse_console_spec
    from kvmlite.devices.virtio import ThreadPoolIoExecutor, VirtioBlock, VirtioConsole, VirtioRng

    add = wiring.add_pci if config.virtio_transport == "pci" else wiring.add_mmio
    if config.disks:
        executor = ThreadPoolIoExecutor()
        machine.closers.append(executor.close)
        assert executor.completion_fd is not None
        wiring.watch(executor.completion_fd, executor.run_completions)
    for n, disk in enumerate(config.disks):
        backend = open_image(
            str(disk.path), disk.format, read_only=disk.read_only, direct=disk.direct
        )
        machine.closers.append(backend.close)
        blk = VirtioBlock(
            backend, serial=disk.serial or "", num_queues=disk.queues, executor=executor
        )
        machine.devices[f"disk{n}"] = add(blk)
    add_networks(machine, config, wiring, add)
    if config.rng is not None:

        def timer(delay: float, callback: Callable[[], None]) -> None:
            machine.loop.call_later(delay, wiring.locked(callback))

        rng = VirtioRng(rate_limit=config.rng or None, timer=timer)
        machine.devices["rng"] = add(rng)
    if config.virtio_console is not None or config.virtio_ports:
        hvc0 = parse_console_spec(config.virtio_console or "null")
        machine.closers.append(hvc0.close)
        ports = []
        for name, spec in config.virtio_ports:
            backend = parse_console_spec(spec)
            machine.closers.append(backend.close)
            ports.append((name, backend))
        console = VirtioConsole(hvc0, ports=ports)
        machine.devices["virtio-console"] = add(console)
        wire_virtio_console_input(machine, wiring, console, [hvc0, *(b for _, b in ports)])


def _add_pci(machine: Machine) -> Any:
    """PCI bus 0: config mechanism #1 at 0xCF8 and ECAM (MCFG) for bus 0."""
    from kvmlite.devices.pci.root import ECAM_SIZE, PCI_CONFIG_IO_BASE, PCI_CONFIG_IO_SIZE, PciRoot

    pci = PciRoot()
    pci.reset_handler = lambda: machine.request_exit(ExitReason.REBOOT, message="0xCF9 reset")
    lock = machine.dev_lock  # CONFIG_ADDRESS is shared by every vCPU
    machine.pio_bus.insert(
        LockedDevice(pci.config_io, lock), PCI_CONFIG_IO_BASE, PCI_CONFIG_IO_SIZE
    )
    machine.mmio_bus.insert(LockedDevice(pci.ecam, lock), ECAM_BASE, ECAM_SIZE)
    machine.devices["pci"] = pci
    return pci


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
    from kvmlite.devices.legacy.debug_exit import DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, DebugExit
    from kvmlite.devices.legacy.i8042 import I8042
    from kvmlite.devices.legacy.rtc import CmosRtc
    from kvmlite.devices.legacy.serial import Serial16550

    vm, pio, loop = machine.vm, machine.pio_bus, machine.loop
    from kvmlite.backends.char import parse_console_spec

    # COM1 is the console; COM2..COM4 exist when the user gives them a backend.
    backends = [console]
    for spec in config.serial:
        backend = parse_console_spec(spec)
        machine.closers.append(backend.close)
        backends.append(backend)
    for n, backend in enumerate(backends):
        base, irq = COM_PORTS[n]
        serial_input = ConsoleInput(loop, backend)
        serial = Serial16550(KvmIrqLine(vm, irq), tolerant(backend.write), serial_input.rx_room)
        locked = LockedDevice(serial)
        pio.insert(locked, base, 8)
        machine.devices[f"serial{n}"] = serial
        serial_input.attach(serial, locked.lock)

    i8042 = I8042(
        reset=lambda: machine.request_exit(ExitReason.REBOOT, message="i8042 reset"),
        kbd_irq=KvmIrqLine(vm, 1),
        aux_irq=KvmIrqLine(vm, 12),
    )
    # Two one-byte devices: 0x61 (port B) belongs to the in-kernel PIT.
    i8042_lock = threading.Lock()
    pio.insert(LockedDevice(i8042.data_port, i8042_lock), 0x60, 1)
    pio.insert(LockedDevice(i8042.command_port, i8042_lock), 0x64, 1)
    machine.devices["i8042"] = i8042

    rtc = CmosRtc()
    low = sum(r.size for r in machine.memory.regions if r.gpa < (1 << 32))
    rtc.set_memory_size(low, config.memory - low)
    pio.insert(LockedDevice(rtc), 0x70, 2)
    machine.devices["rtc"] = rtc

    pio.insert(
        DebugExit(lambda v: machine.request_exit(ExitReason.DEBUG_EXIT, v)),
        DEBUG_EXIT_PORT,
        DEBUG_EXIT_SIZE,
    )

    pm = AcpiPm(
        KvmIrqLine(vm, layout.SCI_IRQ),
        on_poweroff=lambda: machine.request_exit(ExitReason.POWEROFF, message="ACPI poweroff"),
    )
    pio.insert(LockedDevice(pm), layout.PM1A_EVT_BLK, 12)
    machine.devices["acpi_pm"] = pm

"""Building a machine, top to bottom (DESIGN.md rule 3, "The machine core").

Three entry points:

* ``assemble(config)`` builds memory, the VM, its irqchip and PIT, the GSI
  routes, the buses and every device with its host backends, and the vCPUs
  with their CPUID and MSRs. It is the same for a boot, a restore and a
  migration target.
* ``boot(machine, images)`` writes the firmware tables, the kernel, the
  initrd and the command line into guest memory and sets the boot vCPU's
  registers.
* ``restore(machine, state)`` applies a saved ``MachineState`` instead of
  booting, in the order kvmlite/vmm/persist.py writes down.

``build_vm(config)`` is assemble + boot. Host input is checked before
anything is opened (the config's ``check_host``, the kernel's format), and
anything that fails undoes what was built before it (an ExitStack), so a bad
kernel or a missing /dev/kvm leaves nothing behind (rule 7).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from kvmlite.bus import Bus
from kvmlite.config import VmConfig
from kvmlite.errors import ConfigError
from kvmlite.eventloop import EventLoop
from kvmlite.memory import PCI_HOLE_START, GuestMemory
from kvmlite.vmm import hostquirks
from kvmlite.vmm.devices import BusKind, Placement
from kvmlite.vmm.gsi import GsiRouter
from kvmlite.vmm.irq import KvmIrqLine
from kvmlite.vmm.legacy import add_legacy_devices
from kvmlite.vmm.locking import LockedDevice
from kvmlite.vmm.machine import Machine
from kvmlite.vmm.outcome import ExitReason
from kvmlite.vmm.virtio import MMIO_BASE, VirtioWiring
from kvmlite.vmm.virtio_devices import add_virtio_devices

if TYPE_CHECKING:
    from kvmlite.arch.x86.boot import BootImages
    from kvmlite.arch.x86.cpufeatures import FeatureOverrides
    from kvmlite.backends.char.base import CharBackend
    from kvmlite.devices.pci.root import PciRoot
    from kvmlite.kvm.vcpu import Vcpu
    from kvmlite.vmm.persist import MachineState

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

# Local APIC register offsets and LVT delivery modes (Intel SDM vol. 3, 10.5.1)
APIC_LVT0 = 0x350
APIC_LVT1 = 0x360
APIC_MODE_EXTINT = 0x7 << 8
APIC_MODE_NMI = 0x4 << 8


def build_vm(
    config: VmConfig,
    *,
    console: CharBackend | None = None,
    loop: EventLoop | None = None,
    on_quit: Callable[[], None] | None = None,
) -> Machine:
    """Assemble and boot the machine described by ``config``; nothing runs yet."""
    images = read_boot_images(config)
    machine = assemble(config, console=console, loop=loop, on_quit=on_quit)
    try:
        boot(machine, images)
    except BaseException:
        machine.close()
        raise
    return machine


def read_boot_images(config: VmConfig) -> BootImages:
    """The kernel and initrd to boot (the user's, or kvmlite's default guest),
    read and checked before anything is built."""
    from kvmlite.arch.x86.boot import read_boot_images as read  # noqa: PLC0415

    config.check_host()
    boot_source = config.boot
    if boot_source.kernel is not None:
        return read(boot_source.kernel, boot_source.initrd)
    from kvmlite.guestimage import default_guest  # noqa: PLC0415

    guest = default_guest()
    return read(guest.vmlinux, guest.initrd)


def assemble(
    config: VmConfig,
    *,
    console: CharBackend | None = None,
    loop: EventLoop | None = None,
    on_quit: Callable[[], None] | None = None,
    memory: GuestMemory | None = None,
) -> Machine:
    """Memory, VM, irqchip/PIT, buses, devices and vCPUs: everything but the boot.

    ``loop``: the event loop to serve the devices on (a ``Vmm``'s; the machine
    then does not close it); ``on_quit``: what the console's quit key does
    (default: end the machine); ``memory``: guest RAM to use instead of new
    RAM (a snapshot's, kvmlite/snapshot/), which the machine then owns and which
    must have the config's size. With ``memory`` the kernel is not needed.
    """
    from kvmlite.arch.x86.cpufeatures import parse_cpu_features  # noqa: PLC0415
    from kvmlite.backends.char import open_char  # noqa: PLC0415
    from kvmlite.kvm import Kvm  # noqa: PLC0415

    mc = config.machine
    try:
        config.check_host(boot=memory is None)
        if memory is not None and memory.size != mc.memory:
            raise ConfigError(f"guest memory of {memory.size} bytes, the config says {mc.memory}")
        features = parse_cpu_features(mc.cpu_features)  # bad names fail before KVM opens
    except BaseException:
        if memory is not None:
            memory.close()
        raise

    with contextlib.ExitStack() as undo:
        kvm = Kvm(mc.kvm_path)
        undo.callback(kvm.close)
        if memory is None:
            memory = GuestMemory.create(mc.memory)
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

        machine = Machine(config, kvm, vm, memory, Bus("pio"), Bus("mmio"), loop or EventLoop())
        machine.owns_loop = loop is None
        machine.gsi = gsi_router
        if machine.owns_loop:
            undo.callback(machine.loop.close)
        undo.callback(_run_closers, machine)  # backends opened from here on

        # Host backends, opened in one place, after every check above.
        if console is None:
            console = open_char(
                config.console,
                on_quit=on_quit
                or (lambda: machine.request_exit(ExitReason.QUIT, message="quit from console")),
            )
        machine.closers.append(console.close)
        uarts = [console]
        for spec in config.serial:
            backend = open_char(spec)
            machine.closers.append(backend.close)
            uarts.append(backend)

        add_legacy_devices(machine, uarts)
        if mc.test_devices:
            from kvmlite.vmm.testdevices import add_test_devices  # noqa: PLC0415

            add_test_devices(machine)
        pci = _add_pci(machine)
        wiring = VirtioWiring(machine, gsi_router, pci)
        machine.closers.append(wiring.close)
        add_virtio_devices(machine, wiring)
        bar_window = PCI_BAR_WINDOW
        if config.vnc is not None:
            from kvmlite.devices.display.framebuffer import FRAMEBUFFER_GPA  # noqa: PLC0415
            from kvmlite.vmm.vnc import add_vnc  # noqa: PLC0415

            add_vnc(machine, config.vnc, wiring)
            bar_window = (PCI_BAR_WINDOW[0], FRAMEBUFFER_GPA - PCI_BAR_WINDOW[0])
        pci.allocate_bars(mmio32=bar_window)
        pci.connect_intx(lambda gsi: KvmIrqLine(vm, gsi))
        machine.cmdline_extra = list(wiring.cmdline)
        _create_vcpus(machine, features, undo)
        undo.pop_all()
    return machine


def boot(machine: Machine, images: BootImages) -> None:
    """Firmware tables, kernel, initrd and command line; the boot vCPU's registers."""
    from kvmlite.arch.x86.acpi.tables import Ecam  # noqa: PLC0415
    from kvmlite.arch.x86.boot import load_kernel  # noqa: PLC0415
    from kvmlite.arch.x86.cpu import apply_boot_state  # noqa: PLC0415
    from kvmlite.devices.pci.root import PciRoot  # noqa: PLC0415

    config = machine.config
    quirks = hostquirks.resolve(config.machine.host_quirks.value)
    cmdline = " ".join([config.full_cmdline(quirks.cmdline), *machine.cmdline_extra])
    if images.format == "multiboot":  # its command line is its argv: no Linux options
        cmdline = config.boot.cmdline
    pci = machine.devices.get("pci", PciRoot)
    # The firmware tables want pins 0..3 (INTA..INTD); PciRoot counts from 1.
    pci_routes = [(r.slot, r.pin - 1, r.gsi) for r in pci.interrupt_routes()]
    machine.boot_plan = load_kernel(
        machine.memory,
        images,
        None,
        cmdline,
        num_vcpus=config.machine.cpus,
        acpi=config.machine.acpi,
        pci_routes=pci_routes,
        ecam=Ecam(ECAM_BASE, last_bus=0),
        mmio32=(PCI_HOLE_START, MMIO_BASE - 1),
        screen_info=_screen_info(machine),
    )
    machine.cmdline = cmdline
    apply_boot_state(machine.vcpus[0], machine.boot_plan.cpu_state())


def restore(machine: Machine, state: MachineState) -> None:
    """vCPUs, irqchip/PIT/clock, devices and transports from ``state`` (instead of ``boot``)."""
    from kvmlite.vmm.persist import restore_machine  # noqa: PLC0415

    restore_machine(machine, state)


def _create_vcpus(machine: Machine, features: FeatureOverrides, undo: contextlib.ExitStack) -> None:
    """Every vCPU with its CPUID, MSRs, LAPIC wiring; APs wait for INIT/SIPI."""
    from kvmlite.arch.x86.cpu import initial_mp_state  # noqa: PLC0415
    from kvmlite.arch.x86.cpuid import apply_cpuid, build_cpuid, supported_from_kvm  # noqa: PLC0415
    from kvmlite.arch.x86.msrs import boot_msrs, filter_supported  # noqa: PLC0415

    mc = machine.config.machine
    quirks = hostquirks.resolve(mc.host_quirks.value)
    supported = supported_from_kvm(machine.kvm.supported_cpuid())
    msrs = filter_supported(boot_msrs(), machine.kvm.msr_index_list())
    for index in range(mc.cpus):
        vcpu = machine.vm.create_vcpu(index)
        machine.vcpus.append(vcpu)
        undo.callback(vcpu.close)
        entries = build_cpuid(supported, index, mc.cpus, features)
        if quirks.advertise_xsaveerptr:
            entries = hostquirks.advertise_xsaveerptr(entries)
        apply_cpuid(vcpu, entries)
        vcpu.set_msrs(msrs)
        vcpu.set_mp_state(initial_mp_state(index))
        _setup_lapic(vcpu)


def _screen_info(machine: Machine) -> bytes:
    """The framebuffer's description for the zero page (bzImage boots), if there is one."""
    if machine.config.vnc is None:
        return b""
    from kvmlite.vmm.vnc import screen_info  # noqa: PLC0415

    info = screen_info(machine)
    return bytes(info) if info is not None else b""


def _run_closers(machine: Machine) -> None:
    """Undo for a build that failed half-way: close what was opened."""
    while machine.closers:
        try:
            machine.closers.pop()()
        except Exception:
            log.exception("error while undoing a partial build")


def _add_pci(machine: Machine) -> PciRoot:
    """PCI bus 0: config mechanism #1 at 0xCF8 and ECAM (MCFG) for bus 0."""
    from kvmlite.devices.pci.root import (  # noqa: PLC0415
        ECAM_SIZE,
        PCI_CONFIG_IO_BASE,
        PCI_CONFIG_IO_SIZE,
        PciRoot,
    )

    pci = PciRoot()
    pci.reset_handler = lambda: machine.request_exit(ExitReason.REBOOT, message="0xCF9 reset")
    lock = machine.dev_lock  # CONFIG_ADDRESS is shared by every vCPU
    machine.pio_bus.insert(
        LockedDevice(pci.config_io, lock), PCI_CONFIG_IO_BASE, PCI_CONFIG_IO_SIZE
    )
    machine.mmio_bus.insert(LockedDevice(pci.ecam, lock), ECAM_BASE, ECAM_SIZE)
    machine.devices.add(
        "pci",
        pci,
        placements=(
            Placement(BusKind.PIO, PCI_CONFIG_IO_BASE, PCI_CONFIG_IO_SIZE),
            Placement(BusKind.MMIO, ECAM_BASE, ECAM_SIZE),
        ),
        lock=lock,
    )
    return pci


def _setup_lapic(vcpu: Vcpu) -> None:
    """LINT0 as ExtINT and LINT1 as NMI, the wiring of a PC (MP spec 5.1)."""
    lapic = vcpu.get_lapic()
    regs = bytearray(bytes(lapic.regs))
    for off, mode in ((APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)):
        value = int.from_bytes(regs[off : off + 4], "little")
        value = (value & ~0x10700) | mode  # unmask, set the delivery mode
        regs[off : off + 4] = value.to_bytes(4, "little")
    lapic.regs[:] = list(regs) if not isinstance(lapic.regs, bytes) else regs
    vcpu.set_lapic(lapic)

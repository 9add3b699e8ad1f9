"""The PC's legacy devices: UARTs, i8042, CMOS RTC, ACPI PM block, debug exit.

Port assignments are a PC's (COM1..COM4 at 0x3F8/0x2F8/0x3E8/0x2E8 with IRQ
4/3/4/3; i8042 at 0x60/0x64, IRQ 1 and 12; RTC at 0x70); the ACPI PM block
sits where the FADT says (kvmlite/arch/x86/layout.py).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from kvmlite.arch.x86 import layout
from kvmlite.vmm.console_io import ConsoleInput, tolerant
from kvmlite.vmm.devices import BusKind, Placement
from kvmlite.vmm.irq import KvmIrqLine
from kvmlite.vmm.locking import LockedDevice
from kvmlite.vmm.outcome import ExitReason

if TYPE_CHECKING:
    from kvmlite.backends.char.base import CharBackend
    from kvmlite.vmm.machine import Machine

#: (base port, IRQ) of COM1..COM4.
COM_PORTS = ((0x3F8, 4), (0x2F8, 3), (0x3E8, 4), (0x2E8, 3))
UART_PORTS = 8
#: The ACPI PM block: PM1a event (4), PM1a control (2), pad, PM timer (4).
PM_BLOCK_SIZE = 12


def add_legacy_devices(machine: Machine, uarts: list[CharBackend]) -> None:
    """COM1 (the console) and COM2..COM4 (``uarts[1:]``), then the rest of a PC."""
    from kvmlite.devices.legacy.acpi_pm import AcpiPm  # noqa: PLC0415
    from kvmlite.devices.legacy.debug_exit import (  # noqa: PLC0415
        DEBUG_EXIT_PORT,
        DEBUG_EXIT_SIZE,
        DebugExit,
    )
    from kvmlite.devices.legacy.i8042 import I8042  # noqa: PLC0415
    from kvmlite.devices.legacy.rtc import CmosRtc  # noqa: PLC0415
    from kvmlite.devices.legacy.serial import Serial16550  # noqa: PLC0415

    vm, pio, loop, devices = machine.vm, machine.pio_bus, machine.loop, machine.devices
    for n, backend in enumerate(uarts):
        base, irq = COM_PORTS[n]
        serial_input = ConsoleInput(loop, backend)
        serial = Serial16550(KvmIrqLine(vm, irq), tolerant(backend.write), serial_input.rx_room)
        serial.name = f"serial{n}"
        locked = LockedDevice(serial)
        pio.insert(locked, base, UART_PORTS)
        devices.add(
            serial.name,
            serial,
            placements=(Placement(BusKind.PIO, base, UART_PORTS, irq),),
            lock=locked.lock,
        )
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
    devices.add(
        "i8042",
        i8042,
        placements=(Placement(BusKind.PIO, 0x60, 1, 1), Placement(BusKind.PIO, 0x64, 1, 12)),
        lock=i8042_lock,
    )

    rtc = CmosRtc()
    low = sum(r.size for r in machine.memory.regions if r.gpa < (1 << 32))
    rtc.set_memory_size(low, machine.memory.size - low)
    rtc_locked = LockedDevice(rtc)
    pio.insert(rtc_locked, 0x70, 2)
    devices.add("rtc", rtc, placements=(Placement(BusKind.PIO, 0x70, 2, 8),), lock=rtc_locked.lock)

    debug_exit = DebugExit(lambda v: machine.request_exit(ExitReason.DEBUG_EXIT, v))
    pio.insert(debug_exit, DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE)
    devices.add(
        "debug-exit",
        debug_exit,
        placements=(Placement(BusKind.PIO, DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE),),
    )

    pm = AcpiPm(
        KvmIrqLine(vm, layout.SCI_IRQ),
        on_poweroff=lambda: machine.request_exit(ExitReason.POWEROFF, message="ACPI poweroff"),
    )
    pm_lock = LockedDevice(pm)
    pio.insert(pm_lock, layout.PM1A_EVT_BLK, PM_BLOCK_SIZE)
    devices.add(
        "acpi-pm",
        pm,
        placements=(Placement(BusKind.PIO, layout.PM1A_EVT_BLK, PM_BLOCK_SIZE, layout.SCI_IRQ),),
        lock=pm_lock.lock,
    )

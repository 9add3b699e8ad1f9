"""The PC's legacy ISA devices, as register-level models (no I/O of their own).

=================  ==============  =====================================
module             ports           what
=================  ==============  =====================================
``serial``         0x3F8.. (COMx)  16550A UART (Linux's 8250 driver)
``i8042``          0x60, 0x64      PS/2 controller, CPU reset line
``rtc``            0x70, 0x71      MC146818 CMOS RTC and NVRAM
``acpi_pm``        0x600..0x60B    ACPI PM1a event/control, PM timer
``debug_exit``     0x501           test guests' exit status
``isa_debug_exit`` 0xF4            QEMU's isa-debug-exit (status (v<<1)|1)
``pc_testdev``     0xE0.., 0x2000  QEMU's pc-testdev (kvm-unit-tests)
=================  ==============  =====================================

Each is a bus device (``read(offset, size)`` / ``write(offset, data)``) with
``save()``/``restore()``; callbacks and IRQ lines come in through the
constructor. Importing this package places nothing anywhere: the builder
does (DESIGN.md rule 3).
"""

from kvmlite.devices.legacy.acpi_pm import AcpiPm
from kvmlite.devices.legacy.debug_exit import DEBUG_EXIT_PORT, DebugExit, debug_exit_status
from kvmlite.devices.legacy.i8042 import I8042
from kvmlite.devices.legacy.isa_debug_exit import IsaDebugExit, isa_debug_exit_status
from kvmlite.devices.legacy.pc_testdev import PcTestdev
from kvmlite.devices.legacy.rtc import CmosRtc, cmos_memory_bytes
from kvmlite.devices.legacy.serial import (
    COM1_BASE,
    COM1_IRQ,
    COM2_BASE,
    COM2_IRQ,
    COM3_BASE,
    COM3_IRQ,
    COM4_BASE,
    COM4_IRQ,
    Serial16550,
)

__all__ = [
    "COM1_BASE",
    "COM1_IRQ",
    "COM2_BASE",
    "COM2_IRQ",
    "COM3_BASE",
    "COM3_IRQ",
    "COM4_BASE",
    "COM4_IRQ",
    "DEBUG_EXIT_PORT",
    "AcpiPm",
    "CmosRtc",
    "DebugExit",
    "I8042",
    "IsaDebugExit",
    "PcTestdev",
    "Serial16550",
    "cmos_memory_bytes",
    "debug_exit_status",
    "isa_debug_exit_status",
]

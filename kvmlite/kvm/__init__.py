"""kvmlite.kvm: the only code that issues ioctls on /dev/kvm (DESIGN.md, "The house").

``Kvm`` -> ``Vm`` -> ``Vcpu``; ``Vcpu.run()`` returns the typed exits of
``kvmlite.kvm.exits``; ABI structs live in ``kvmlite.kvm.structs``.
"""

from kvmlite.kvm._ioctl import KvmIoctlError
from kvmlite.kvm.exits import (
    DebugExit,
    Exit,
    FailEntryExit,
    HltExit,
    InternalErrorExit,
    IntrExit,
    IoExit,
    MmioExit,
    ShutdownExit,
    SystemEventExit,
    UnknownExit,
)
from kvmlite.kvm.system import Kvm
from kvmlite.kvm.vcpu import Vcpu
from kvmlite.kvm.vm import Vm, irqchip_route, msi_route

__all__ = [
    "DebugExit",
    "Exit",
    "FailEntryExit",
    "HltExit",
    "InternalErrorExit",
    "IntrExit",
    "IoExit",
    "Kvm",
    "KvmIoctlError",
    "MmioExit",
    "ShutdownExit",
    "SystemEventExit",
    "UnknownExit",
    "Vcpu",
    "Vm",
    "irqchip_route",
    "msi_route",
]

"""The machine resource: memory, vCPUs, CPU model, firmware, transports.

Firecracker's ``machine-config`` (vcpu_count, mem_size_mib, track_dirty_pages)
is a subset of it; the rest are kvmlite's ``kvmlite run`` options.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kvmlite.config.sizes import MIB
from kvmlite.errors import ConfigError

MIN_MEMORY = 16 * MIB
MAX_MEMORY = 1 << 40  # 1 TiB: beyond what this VMM has been designed for
#: The MP table and xAPIC ids hold 8-bit APIC ids; 255 is the broadcast id.
MAX_VCPUS = 254


class Transport(enum.Enum):
    """How virtio devices reach the guest."""

    PCI = "pci"
    MMIO = "mmio"


class HostQuirksMode(enum.Enum):
    """``--host-quirks``: see kvmlite/vmm/hostquirks.py."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class MachineConfig:
    memory: int = 256 * MIB
    cpus: int = 1
    #: CPUID overrides in /proc/cpuinfo spelling: ``-avx512f,+x2apic``.
    cpu_features: str = ""
    acpi: bool = True
    host_quirks: HostQuirksMode = HostQuirksMode.AUTO
    virtio_transport: Transport = Transport.PCI
    kvm_path: str = "/dev/kvm"
    #: Keep KVM's dirty log on every RAM slot (diff snapshots, migration).
    track_dirty_pages: bool = False
    #: QEMU's isa-debug-exit (0xF4) and pc-testdev, for kvm-unit-tests (vmm/testdevices.py).
    test_devices: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.memory, bool) or not isinstance(self.memory, int):
            raise ConfigError("memory must be a whole number of bytes")
        if self.memory < MIN_MEMORY:
            raise ConfigError(f"memory {self.memory >> 20} MiB is too small: at least 16 MiB")
        if self.memory > MAX_MEMORY:
            raise ConfigError(f"memory {self.memory >> 20} MiB is too large: at most 1 TiB")
        if self.memory % (2 * MIB):
            raise ConfigError("memory must be a multiple of 2 MiB")
        if isinstance(self.cpus, bool) or not isinstance(self.cpus, int):
            raise ConfigError("the vCPU count must be a whole number")
        if not 1 <= self.cpus <= MAX_VCPUS:
            raise ConfigError(f"{self.cpus} vCPUs is out of range: use 1 to {MAX_VCPUS}")
        if not isinstance(self.host_quirks, HostQuirksMode):
            raise ConfigError("--host-quirks must be auto, on or off")
        if not isinstance(self.virtio_transport, Transport):
            raise ConfigError("--virtio-transport must be pci or mmio")
        if not isinstance(self.test_devices, bool):
            raise ConfigError("test_devices must be true or false")

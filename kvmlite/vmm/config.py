"""The machine configuration: plain dataclasses, validated before anything is built.

Validation happens here, up front, so that a bad command line or API request
names what is wrong and nothing is left half-built (DESIGN.md rule 7).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from kvmlite.backends.net.spec import NetSpec
from kvmlite.errors import ConfigError

MIB = 1 << 20
MIN_MEMORY = 16 * MIB
MAX_MEMORY = 1 << 40  # 1 TiB: beyond what this VMM has been designed for
#: The MP table and xAPIC ids hold 8-bit APIC ids; 255 is the broadcast id.
MAX_VCPUS = 254

#: Appended to the command line unless the user's own sets a console.
DEFAULT_CMDLINE = "console=ttyS0 reboot=k panic=-1"


def parse_size(text: str, *, default_unit: str = "M") -> int:
    """Parse a QEMU-style size: '64', '64M', '1G', '512k' -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([bBkKmMgGtT]?)(i?[bB])?\s*", text)
    if not m:
        raise ConfigError(f"bad size {text!r}: use a number with an optional K, M, G or T suffix")
    unit = (m.group(2) or default_unit).upper()
    return int(m.group(1)) << {"B": 0, "K": 10, "M": 20, "G": 30, "T": 40}[unit]


@dataclass
class DiskConfig:
    """A virtio-blk drive: ``-d PATH[,ro][,direct][,serial=S][,format=F][,queues=N]``."""

    path: Path
    read_only: bool = False
    direct: bool = False
    serial: str | None = None
    format: str | None = None
    queues: int = 1

    @classmethod
    def parse(cls, spec: str) -> DiskConfig:
        parts = spec.split(",")
        if not parts[0]:
            raise ConfigError(f"bad disk {spec!r}: expected PATH[,ro][,direct][,serial=S]")
        disk = cls(Path(parts[0]))
        for opt in parts[1:]:
            key, _, value = opt.partition("=")
            if key == "ro" and not value:
                disk.read_only = True
            elif key == "direct" and not value:
                disk.direct = True
            elif key == "serial" and value:
                if len(value.encode()) > 20:
                    raise ConfigError(f"disk serial {value!r} is longer than 20 bytes")
                disk.serial = value
            elif key == "format" and value in ("raw", "qcow2"):
                disk.format = value
            elif key == "queues" and value.isdigit() and 1 <= int(value) <= 64:
                disk.queues = int(value)
            else:
                raise ConfigError(
                    f"bad disk option {opt!r} in {spec!r}: "
                    "known options are ro, direct, serial=S, format=raw|qcow2, queues=1..64"
                )
        return disk


@dataclass
class VmConfig:
    """Everything needed to build a machine."""

    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""
    memory: int = 256 * MIB
    cpus: int = 1
    cpu_features: str = ""
    console: str = "stdio"
    #: Backends (console specs) of COM2..COM4; COM1 is ``console``.
    serial: list[str] = field(default_factory=list)
    acpi: bool = True
    host_quirks: str = "auto"  # auto | on | off: see kvmlite/vmm/hostquirks.py
    disks: list[DiskConfig] = field(default_factory=list)
    #: virtio-net NICs (``-n``), in PCI slot order; kind "none" adds nothing.
    nets: list[NetSpec] = field(default_factory=list)
    #: virtio-rng: None = no device, 0 = unlimited, N = at most N bytes/s.
    rng: int | None = None
    #: virtio-console: hvc0's backend spec, and extra named ports (name, spec).
    virtio_console: str | None = None
    virtio_ports: list[tuple[str, str]] = field(default_factory=list)
    virtio_transport: str = "pci"  # pci | mmio
    kvm_path: str = "/dev/kvm"

    def validate(self) -> None:
        """Raise ConfigError naming the first thing that is wrong."""
        if self.memory < MIN_MEMORY:
            raise ConfigError(f"memory {self.memory >> 20} MiB is too small: at least 16 MiB")
        if self.memory > MAX_MEMORY:
            raise ConfigError(f"memory {self.memory >> 20} MiB is too large: at most 1 TiB")
        if self.memory % (2 * MIB):
            raise ConfigError("memory must be a multiple of 2 MiB")
        if not 1 <= self.cpus <= MAX_VCPUS:
            raise ConfigError(f"{self.cpus} vCPUs is out of range: use 1 to {MAX_VCPUS}")
        if len(self.serial) > 3:
            raise ConfigError("at most 3 --serial ports (COM2..COM4); COM1 is the --console")
        if self.virtio_transport not in ("pci", "mmio"):
            raise ConfigError("--virtio-transport must be pci or mmio")
        if self.rng is not None and self.rng < 0:
            raise ConfigError("--rng rate limit must be a positive number of bytes/s")
        names = [n for n, _ in self.virtio_ports]
        for name in names:
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
                raise ConfigError(f"virtio port name {name!r}: use letters, digits, . _ -")
        if len(set(names)) != len(names):
            raise ConfigError("virtio port names must be unique")
        if self.host_quirks not in ("auto", "on", "off"):
            raise ConfigError("--host-quirks must be auto, on or off")
        for what, path in (("kernel", self.kernel), ("initrd", self.initrd)):
            if path is None:
                continue
            if not path.exists():
                raise ConfigError(f"{what} {path} does not exist")
            if not path.is_file():
                raise ConfigError(f"{what} {path} is not a regular file")
            if not os.access(path, os.R_OK):
                raise ConfigError(f"{what} {path} is not readable (permission denied)")
        if self.initrd is not None and self.initrd.stat().st_size >= self.memory:
            raise ConfigError(
                f"initrd {self.initrd} ({self.initrd.stat().st_size >> 20} MiB) does not fit "
                f"in {self.memory >> 20} MiB of guest memory: give the guest more with -m"
            )
        from kvmlite.vmm.network import default_mac  # noqa: PLC0415 - vmm imports config

        nics = [s for s in self.nets if s.kind != "none"]
        macs = [s.mac or default_mac(n) for n, s in enumerate(nics)]
        if len(set(macs)) != len(macs):
            raise ConfigError(f"two NICs would have the same MAC address: {', '.join(macs)}")
        for d in self.disks:
            if not d.path.exists():
                raise ConfigError(f"disk {d.path} does not exist (create one with kvmlite img)")

    def full_cmdline(self, extra: str = "") -> str:
        """The kernel command line: defaults, then the user's, then host quirks."""
        parts = []
        if "console=" not in self.cmdline:
            parts.append(DEFAULT_CMDLINE)
        if self.cmdline:
            parts.append(self.cmdline)
        if extra:
            parts.append(extra)
        return " ".join(parts)

"""The whole machine's configuration: the resources together, checked as a set."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from kvmlite.config.boot import BootSource
from kvmlite.config.cdrom import CdromConfig
from kvmlite.config.char import CharConfig, CharKind
from kvmlite.config.drive import DriveConfig
from kvmlite.config.machine import MachineConfig
from kvmlite.config.net import NetConfig, NetKind, default_mac
from kvmlite.config.vnc import VncConfig
from kvmlite.errors import ConfigError, StateError

#: Put first on the command line unless the user's own sets a console.
DEFAULT_CMDLINE = "console=ttyS0 reboot=k panic=-1"
#: COM2..COM4; COM1 is the console.
MAX_EXTRA_SERIAL = 3
_PORT_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class RngConfig:
    """virtio-rng (Firecracker's ``entropy``): at most ``rate_limit`` bytes/s, 0 = unlimited."""

    rate_limit: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.rate_limit, bool) or self.rate_limit < 0:
            raise ConfigError("--rng rate limit must be a positive number of bytes/s")


@dataclass(frozen=True)
class VirtioConsoleConfig:
    """virtio-console: hvc0's backend and extra named ports (guest /dev/vportDpN)."""

    hvc0: CharConfig = CharConfig(CharKind.NULL)
    ports: tuple[tuple[str, CharConfig], ...] = ()

    def __post_init__(self) -> None:
        names = [n for n, _ in self.ports]
        for name in names:
            if not _PORT_NAME.fullmatch(name):
                raise ConfigError(f"virtio port name {name!r}: use letters, digits, . _ -")
        if len(set(names)) != len(names):
            raise ConfigError("virtio port names must be unique")


@dataclass(frozen=True)
class VmConfig:
    """Everything needed to build a machine; ``dataclasses.replace`` makes a changed copy."""

    machine: MachineConfig = field(default_factory=MachineConfig)
    boot: BootSource = field(default_factory=BootSource)
    #: COM1's backend.
    console: CharConfig = field(default_factory=CharConfig)
    #: Backends of COM2..COM4.
    serial: tuple[CharConfig, ...] = ()
    drives: tuple[DriveConfig, ...] = ()
    #: virtio-net NICs (``-n``), in PCI slot order; kind "none" adds nothing.
    nets: tuple[NetConfig, ...] = ()
    rng: RngConfig | None = None
    virtio_console: VirtioConsoleConfig | None = None
    #: CD-ROM drives (``--cdrom``), LUNs 0.. of the virtio-scsi adapter, before SCSI disks.
    cdroms: tuple[CdromConfig, ...] = ()
    #: A VNC console (framebuffer, tablet, server); None builds none of it.
    vnc: VncConfig | None = None

    def __post_init__(self) -> None:
        # Lists are accepted for convenience and stored as tuples (frozen all the way down).
        for name in ("serial", "drives", "nets", "cdroms"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.serial) > MAX_EXTRA_SERIAL:
            raise ConfigError("at most 3 --serial ports (COM2..COM4); COM1 is the --console")
        ids = [d.id for d in self.drives if d.id] + [n.id for n in self.nets if n.id]
        ids += [c.id for c in self.cdroms if c.id]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"device ids must be unique: {', '.join(sorted(ids))}")
        macs = [n.mac or default_mac(i) for i, n in enumerate(self.active_nets)]
        if len(set(macs)) != len(macs):
            raise ConfigError(f"two NICs would have the same MAC address: {', '.join(macs)}")

    @property
    def active_nets(self) -> tuple[NetConfig, ...]:
        return tuple(n for n in self.nets if n.kind is not NetKind.NONE)

    def check_host(self, *, boot: bool = True) -> None:
        """The checks that look at the host's files; run before anything is opened.
        ``boot=False`` (a restore) does not need the kernel and initrd."""
        if boot:
            self.boot.check_host(self.machine.memory)
        for drive in self.drives:
            drive.check_host()
        for cdrom in self.cdroms:
            cdrom.check_host()
        if self.vnc is not None:
            self.vnc.check_host()

    def full_cmdline(self, extra: str = "") -> str:
        """The kernel command line: defaults, then the user's, then host quirks."""
        parts = []
        if "console=" not in self.boot.cmdline:
            parts.append(DEFAULT_CMDLINE)
        if self.boot.cmdline:
            parts.append(self.boot.cmdline)
        if extra:
            parts.append(extra)
        return " ".join(parts)

    # -- JSON ---------------------------------------------------------------------

    def to_json(self) -> str:
        from kvmlite.state import to_plain  # noqa: PLC0415

        return json.dumps(to_plain(self), indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> VmConfig:
        from kvmlite.state import from_plain  # noqa: PLC0415

        try:
            data: Any = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"machine config is not JSON: {e}") from None
        try:
            return from_plain(cls, data, "config")
        except StateError as e:
            raise ConfigError(str(e)) from None

"""A drive: a disk image behind virtio-blk (``-d``, Firecracker's ``drives``)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from kvmlite.errors import ConfigError

MAX_QUEUES = 64
#: virtio 1.2 §5.2.6: VIRTIO_BLK_ID_BYTES.
SERIAL_BYTES = 20
_ID = re.compile(r"[A-Za-z0-9_]{1,64}")


class ImageFormat(enum.Enum):
    RAW = "raw"
    QCOW2 = "qcow2"


class AioEngine(enum.Enum):
    """The block I/O engine (QEMU's ``aio=``; kvmlite.backends.block.engines)."""

    THREADS = "threads"
    NATIVE = "native"
    IO_URING = "io_uring"


class DriveInterface(enum.Enum):
    """What carries the drive to the guest: virtio-blk, or a LUN on virtio-scsi."""

    VIRTIO = "virtio"
    SCSI = "scsi"


@dataclass(frozen=True)
class DriveConfig:
    """``-d PATH[,ro][,direct][,serial=S][,format=F][,queues=N][,locking=off][,force-share]``
    ``[,aio=threads|native|io_uring][,if=virtio|scsi]``.

    ``locking=off`` takes no image lock (QEMU's ``file.locking=off``);
    ``force-share`` (with ``ro``) reads an image another process may be
    writing (QEMU's ``force-share=on``); see kvmlite/backends/block/locking.py.
    ``aio`` picks the I/O engine (None: the host's default; docs/block-engines.md).
    ``id`` names the drive for the management API (Firecracker's
    ``drive_id``); ``kvmlite run`` numbers its drives ``disk0``, ``disk1``...
    """

    path: Path
    read_only: bool = False
    direct: bool = False
    serial: str | None = None
    format: ImageFormat | None = None
    queues: int = 1
    id: str = ""
    locking: bool = True
    force_share: bool = False
    #: None: the host's default engine (docs/block-engines.md).
    aio: AioEngine | None = None
    interface: DriveInterface = DriveInterface.VIRTIO

    def __post_init__(self) -> None:
        if not str(self.path):
            raise ConfigError("a drive needs a path")
        if self.serial is not None and len(self.serial.encode()) > SERIAL_BYTES:
            raise ConfigError(f"disk serial {self.serial!r} is longer than {SERIAL_BYTES} bytes")
        if isinstance(self.queues, bool) or not 1 <= self.queues <= MAX_QUEUES:
            raise ConfigError(f"disk queues must be 1 to {MAX_QUEUES}")
        if self.force_share and not self.read_only:
            raise ConfigError(f"disk {self.path}: force-share needs a read-only disk (add ro)")
        if self.id and not _ID.fullmatch(self.id):
            raise ConfigError(f"drive id {self.id!r}: use 1 to 64 letters, digits and _")
        if self.interface is DriveInterface.SCSI and self.queues != 1:
            raise ConfigError("queues= is for virtio-blk drives; a SCSI drive is one LUN")

    @classmethod
    def parse(cls, spec: str, *, id: str = "") -> DriveConfig:
        parts = spec.split(",")
        if not parts[0]:
            raise ConfigError(f"bad disk {spec!r}: expected PATH[,ro][,direct][,serial=S]")
        opts: dict[str, object] = {}
        for opt in parts[1:]:
            key, _, value = opt.partition("=")
            if key == "ro" and not value:
                opts["read_only"] = True
            elif key == "direct" and not value:
                opts["direct"] = True
            elif key == "serial" and value:
                opts["serial"] = value
            elif key == "format" and value in ("raw", "qcow2"):
                opts["format"] = ImageFormat(value)
            elif key == "queues" and value.isdigit() and 1 <= int(value) <= MAX_QUEUES:
                opts["queues"] = int(value)
            elif key == "locking" and value in ("on", "off"):
                opts["locking"] = value == "on"
            elif key == "force-share" and value in ("", "on", "off"):
                opts["force_share"] = value != "off"
            elif key == "aio" and value in {e.value for e in AioEngine}:
                opts["aio"] = AioEngine(value)
            elif key == "if" and value in ("virtio", "scsi"):
                opts["interface"] = DriveInterface(value)
            else:
                raise ConfigError(
                    f"bad disk option {opt!r} in {spec!r}: "
                    "known options are ro, direct, serial=S, format=raw|qcow2, "
                    f"queues=1..{MAX_QUEUES}, locking=on|off, force-share, "
                    "aio=threads|native|io_uring, if=virtio|scsi"
                )
        return cls(Path(parts[0]), id=id, **opts)  # type: ignore[arg-type]

    def check_host(self) -> None:
        if not self.path.exists():
            raise ConfigError(f"disk {self.path} does not exist (create one with kvmlite img)")

"""A CD-ROM drive on virtio-scsi: ``--cdrom FILE.iso|DIR|''`` (docs/cdrom.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kvmlite.errors import ConfigError

_ID = re.compile(r"[A-Za-z0-9_]{1,64}")


@dataclass(frozen=True)
class CdromConfig:
    """A drive and its first medium: an ISO image, a directory (made into an ISO 9660
    image with Rock Ridge and Joliet when the machine is built), or '' for none.

    ``id`` names the drive for the management API; ``kvmlite run`` numbers its
    drives ``cd0``, ``cd1``...
    """

    source: str = ""
    id: str = ""

    def __post_init__(self) -> None:
        if self.id and not _ID.fullmatch(self.id):
            raise ConfigError(f"CD-ROM id {self.id!r}: use 1 to 64 letters, digits and _")

    def check_host(self) -> None:
        if self.source and not Path(self.source).exists():
            raise ConfigError(f"--cdrom {self.source}: no such ISO image or directory")


def cdrom_id(index: int, given: str) -> str:
    return given or f"cd{index}"

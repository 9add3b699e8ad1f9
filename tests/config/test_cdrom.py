"""--cdrom and -d PATH,if=scsi as configuration data."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kvmlite.cli.run import config_from_args, register
from kvmlite.config import CdromConfig, DriveConfig, DriveInterface, VmConfig
from kvmlite.errors import ConfigError


def test_scsi_drive_interface() -> None:
    assert DriveConfig.parse("/x").interface is DriveInterface.VIRTIO
    assert DriveConfig.parse("/x,if=scsi,ro").interface is DriveInterface.SCSI
    for bad in ("/x,if=ide", "/x,if=scsi,queues=2"):
        with pytest.raises(ConfigError):
            DriveConfig.parse(bad)


def test_cdrom_config_and_json(tmp_path: Path) -> None:
    iso = tmp_path / "a.iso"
    iso.write_bytes(bytes(2048))
    config = VmConfig(cdroms=[CdromConfig(str(iso)), CdromConfig("", id="empty")],
                      drives=[DriveConfig.parse(f"{iso},if=scsi")])  # fmt: skip
    assert isinstance(config.cdroms, tuple)
    assert VmConfig.from_json(config.to_json()) == config
    config.cdroms[0].check_host()
    config.cdroms[1].check_host()  # an empty drive needs nothing on the host
    with pytest.raises(ConfigError, match="no such ISO image or directory"):
        CdromConfig(str(tmp_path / "missing.iso")).check_host()
    with pytest.raises(ConfigError, match="CD-ROM id"):
        CdromConfig("", id="bad id")
    with pytest.raises(ConfigError, match="unique"):
        VmConfig(cdroms=[CdromConfig("", id="x"), CdromConfig("", id="x")])


def test_command_line() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["run", "--cdrom", "a.iso", "--cdrom", "", "-d", "d.img,if=scsi"])
    config = config_from_args(args)
    assert [c.source for c in config.cdroms] == ["a.iso", ""]
    assert config.drives[0].interface is DriveInterface.SCSI

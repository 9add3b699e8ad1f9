"""``-d``'s locking=on|off and force-share options (kvmlite/config/drive.py)."""

from pathlib import Path

import pytest

from kvmlite.config import DriveConfig
from kvmlite.config.vm import VmConfig
from kvmlite.errors import ConfigError


def test_defaults_lock() -> None:
    d = DriveConfig.parse("x.img")
    assert d.locking and not d.force_share


@pytest.mark.parametrize(
    ("spec", "locking", "force_share"),
    [
        ("x.img,locking=off", False, False),
        ("x.img,locking=on", True, False),
        ("x.img,ro,force-share", True, True),
        ("x.img,ro,force-share=on", True, True),
        ("x.img,ro,force-share=off", True, False),
        ("x.img,ro,force-share,locking=off", False, True),
    ],
)
def test_parse(spec: str, locking: bool, force_share: bool) -> None:
    d = DriveConfig.parse(spec)
    assert (d.locking, d.force_share) == (locking, force_share)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("x.img,force-share", "force-share needs a read-only disk"),
        ("x.img,locking=no", "bad disk option"),
        ("x.img,locking", "bad disk option"),
        ("x.img,ro,force-share=yes", "bad disk option"),
    ],
)
def test_refused(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        DriveConfig.parse(spec)


def test_json_round_trip() -> None:
    cfg = VmConfig(drives=(DriveConfig(Path("x.img"), read_only=True, force_share=True),))
    back = VmConfig.from_json(cfg.to_json())
    assert back.drives[0].force_share and back.drives[0].locking

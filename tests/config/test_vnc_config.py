"""VncConfig: validation, the address syntax, JSON round trip inside VmConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmlite.config import VmConfig, VncConfig
from kvmlite.config.vnc import VncAddress
from kvmlite.errors import ConfigError


def test_round_trip_and_address(tmp_path: Path) -> None:
    config = VmConfig(vnc=VncConfig(":3", tmp_path / "pw", 640, 480))
    assert VmConfig.from_json(config.to_json()) == config
    assert config.vnc is not None and config.vnc.address == VncAddress("127.0.0.1", 5903)


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"listen": "nope"}, "expected :N"),
        ({"listen": ":1", "width": 0}, "must be 1.."),
        ({"listen": ":1", "height": 5000}, "must be 1.."),
        ({"listen": ":1", "width": True}, "must be 1.."),
    ],
)
def test_bad_values(kwargs, words) -> None:
    with pytest.raises(ConfigError, match=words):
        VncConfig(**kwargs)


def test_bad_json_value_is_a_config_error() -> None:
    text = VmConfig(vnc=VncConfig(":1")).to_json().replace('":1"', '":x"')
    with pytest.raises(ConfigError, match="expected :N"):
        VmConfig.from_json(text)


def test_check_host_password_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="password file"):
        VmConfig(vnc=VncConfig(":1", tmp_path / "missing")).check_host()

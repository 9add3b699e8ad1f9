"""open_image: format probing like QEMU, forced formats, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmlite.backends.block import open_image, probe_format
from kvmlite.backends.block.qcow2 import Qcow2Backend, create_qcow2
from kvmlite.backends.block.raw import RawBackend
from kvmlite.errors import ImageError


def test_probe_picks_qcow2_and_raw(tmp_path: Path) -> None:
    q = tmp_path / "a.qcow2"
    create_qcow2(str(q), 1 << 20)
    r = tmp_path / "a.img"
    r.write_bytes(bytes(1 << 20))
    assert probe_format(str(q)) == "qcow2" and probe_format(str(r)) == "raw"
    with open_image(str(q)) as d:
        assert isinstance(d, Qcow2Backend) and d.size == 1 << 20
    with open_image(str(r)) as d:
        assert isinstance(d, RawBackend)


def test_forced_raw_on_a_qcow2_file(tmp_path: Path) -> None:
    q = tmp_path / "a.qcow2"
    create_qcow2(str(q), 1 << 20)
    with open_image(str(q), "raw") as d:
        assert isinstance(d, RawBackend)
        assert d.read(0, 4) == b"QFI\xfb"


def test_forced_qcow2_on_raw_refused(tmp_path: Path) -> None:
    r = tmp_path / "a.img"
    r.write_bytes(bytes(4096))
    with pytest.raises(ImageError, match="not a qcow2 image"):
        open_image(str(r), "qcow2")


def test_raw_that_looks_like_qcow2_needs_format_raw(tmp_path: Path) -> None:
    r = tmp_path / "guest.img"
    r.write_bytes(b"QFI\xfb" + b"\xee" * 8188)  # a guest wrote a fake header
    with pytest.raises(ImageError, match="format=raw"):
        open_image(str(r))
    with open_image(str(r), "raw") as d:
        assert d.size == 8192


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        open_image(str(tmp_path / "missing.qcow2"))
    with pytest.raises(ImageError, match="unknown image format 'vmdk'"):
        open_image(str(tmp_path), "vmdk")
    with pytest.raises(ImageError, match="directory"):
        open_image(str(tmp_path))
    q = tmp_path / "a.qcow2"
    create_qcow2(str(q), 1 << 20)
    with pytest.raises(ImageError, match="O_DIRECT"):
        open_image(str(q), direct=True)


def test_not_a_file_or_block_device() -> None:
    with pytest.raises(ImageError, match="not a regular file or block device"):
        open_image("/dev/null", "raw", read_only=True)


def test_permission_denied_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root ignores file modes here, so make open(2) fail the way it does for users."""
    r = tmp_path / "a.img"
    r.write_bytes(bytes(4096))

    def deny(*_a: object, **_k: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("kvmlite.backends.block.raw.os.open", deny)
    with pytest.raises(ImageError, match="permission denied.*read-only"):
        open_image(str(r), "raw")

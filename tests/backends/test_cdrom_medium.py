"""CD-ROM media: ISO files, directories made into ISO 9660 images (xorriso is the judge)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmlite.backends.block.cdrom import open_medium
from kvmlite.errors import ImageError

LONG = "a-very-long-driver-file-name-that-joliet-cannot-hold-" + "x" * 40 + ".inf"


def tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def make_tree(root: Path) -> None:
    (root / "drivers" / "amd64" / "deep" / "er" / "and" / "deeper" / "still" / "nine").mkdir(
        parents=True
    )
    (root / "README.txt").write_text("read me\n")
    (root / "drivers" / "amd64" / "viostor.sys").write_bytes(os.urandom(100_000))
    (root / "drivers" / "Ünïcode name.INF").write_text("unicode\n")
    (root / "drivers" / LONG).write_text("long\n")
    (
        root / "drivers" / "amd64" / "deep" / "er" / "and" / "deeper" / "still" / "nine" / "f"
    ).write_bytes(b"")
    (root / "link-to-readme").symlink_to("README.txt")


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="apt-get install xorriso")
def test_directory_becomes_an_iso_with_rock_ridge_and_joliet(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    medium = open_medium(str(src), tmpdir=str(tmp_path))
    assert medium is not None and medium.read_only
    assert not list(tmp_path.glob("kvmlite-cdrom-*"))  # unlinked: nothing left behind
    iso = tmp_path / "copy.iso"
    iso.write_bytes(medium.read(0, medium.size))
    medium.close()
    assert medium.size % 2048 == 0
    out = tmp_path / "rr"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    expected = tree(src)
    assert tree(out) == expected  # the link is stored as the file it points to
    jol = subprocess.run(
        ["xorriso", "-read_fs", "norock", "-indev", str(iso), "-find", "/", "-type", "f"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert "'/drivers/Ünïcode name.INF'" in jol and "viostor.sys" in jol
    assert LONG not in jol  # too long for Joliet: Rock Ridge only


def test_file_empty_and_errors(tmp_path: Path) -> None:
    assert open_medium("") is None
    img = tmp_path / "x.iso"
    img.write_bytes(bytes(4096))
    m = open_medium(str(img))
    assert m is not None and m.read_only and m.size == 4096
    m.close()
    with pytest.raises(ImageError, match="no such CD-ROM"):
        open_medium(str(tmp_path / "missing.iso"))
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0)
        with pytest.raises(ImageError, match="cannot read"):
            open_medium(str(locked))


def test_unreadable_directory_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    real = os.scandir

    def scandir(path: object) -> object:
        if str(path).endswith("amd64"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ImageError, match="amd64: cannot read it for the CD-ROM: Permission denied"):
        open_medium(str(src), tmpdir=str(tmp_path))
    assert not list(tmp_path.glob("kvmlite-cdrom-*"))

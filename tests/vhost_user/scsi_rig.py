"""The QEMU rig for the SCSI tests: the busybox guest plus sg3-utils, ISO images by xorriso.

sg3-utils are dynamically linked: the extra cpio archive (appended to the
default busybox initramfs, see qemu_rig.py) carries the tools, their
libraries and the dynamic loader at the paths ``ldd`` reports.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmlite.guestimage import default_guest
from kvmlite.guestimage.cpio import NewcWriter

from .qemu_rig import QEMU, NetGuest

SG_TOOLS = ("sg_inq", "sg_readcap", "sg_turs", "sg_start", "sg_prevent", "sg_raw")


def _needed(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    paths = re.findall(r"=> (/\S+)", out) + re.findall(r"^\s*(/\S+ld-linux\S*)", out, re.M)
    return sorted(set(paths))


def sg_cpio() -> bytes:
    buf = io.BytesIO()
    dirs: set[str] = set()
    files: dict[str, Path] = {}
    for tool in SG_TOOLS:
        path = shutil.which(tool)
        if path is None:
            pytest.fail(f"{tool} missing: apt-get install sg3-utils")
        files[f"bin/{tool}"] = Path(path)
        for lib in _needed(path):
            files[lib.lstrip("/")] = Path(lib)
    with NewcWriter(buf) as w:
        for name in sorted(files):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    w.directory(d)
            w.file(name, files[name].resolve().read_bytes(), 0o755)
    return buf.getvalue()


def build_scsi_guest(workdir: Path) -> NetGuest:
    if shutil.which(QEMU) is None:
        pytest.fail(f"{QEMU} missing: apt-get install qemu-system-x86")
    base = default_guest(progress=False)
    initrd = workdir / "scsi-guest.cpio"
    initrd.write_bytes(base.initrd.read_bytes() + sg_cpio())
    return NetGuest(base.vmlinux, initrd)


def make_iso(src: Path, iso: Path) -> None:
    """An ISO 9660 image of ``src`` with Rock Ridge and Joliet, made by xorriso."""
    if shutil.which("xorriso") is None:
        pytest.fail("xorriso missing: apt-get install xorriso")
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-R", "-J", "-V", "KVMLITE_TEST", "-o", str(iso), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip


def iso_tree(root: Path, seed: int) -> dict[str, bytes]:
    """Files for an ISO: a big one, a small one, a deep one, a long mixed-case name."""
    files = {
        "big.bin": os.urandom(700_000 + seed),
        "Small File.txt": f"hello {seed}\n".encode(),
        "dir/sub/Deeper-Name-With-Mixed-Case-and-more-than-thirty-characters.dat": os.urandom(5000),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files

"""Initramfs builders: contents checked by GNU cpio, /init by busybox sh -n."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kvmlite.errors import ImageError
from kvmlite.guestimage.initramfs import (
    BUSYBOX_INIT,
    READY_BANNER,
    UDHCPC_SCRIPT,
    build_busybox_initramfs,
    build_single_init_initramfs,
)


def _listing(archive: Path) -> dict[str, str]:
    out = subprocess.run(
        ["cpio", "-itv", "--quiet"], stdin=open(archive, "rb"), capture_output=True, check=True
    ).stdout.decode()
    rows = {}
    for line in out.splitlines():
        fields = line.split()
        name = fields[fields.index("->") - 1] if "->" in fields else fields[-1]
        rows[name] = line
    return rows


def _extract(archive: Path, dest: Path, *names: str) -> None:
    subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames", *names],
        stdin=open(archive, "rb"),
        cwd=dest,
        check=True,
    )


def test_busybox_initramfs(tmp_path: Path) -> None:
    out = build_busybox_initramfs(tmp_path / "bb.cpio")
    rows = _listing(out)
    assert rows["dev/console"].startswith("crw-------") and "5,   1" in rows["dev/console"]
    for d in ("proc", "sys", "dev", "tmp"):
        assert rows[d].startswith("d")
    assert rows["init"].startswith("-rwxr-xr-x")
    assert rows["bin/sh"].endswith("-> /bin/busybox")
    assert rows["sbin/poweroff"].endswith("-> /bin/busybox")
    assert rows["bin/cttyhack"].endswith("-> /bin/busybox")
    listed = subprocess.run(["/bin/busybox", "--list-full"], capture_output=True, text=True)
    assert set(listed.stdout.split()) <= set(rows)  # every applet has its link
    _extract(out, tmp_path, "init", "bin/busybox")
    assert (tmp_path / "bin/busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    init = (tmp_path / "init").read_text()
    assert init == BUSYBOX_INIT and init.startswith("#!/bin/sh\n")
    assert READY_BANNER in init and "cttyhack" in init and "devtmpfs" in init
    # udhcpc's event script, so `udhcpc -i eth0` configures the NIC (the guest
    # test that uses it for real: tests/vhost_user/test_qemu_net_user.py).
    assert rows["etc/udhcpc/default.script"].startswith("-rwxr-xr-x")
    _extract(out, tmp_path, "etc/udhcpc/default.script")
    assert (tmp_path / "etc/udhcpc/default.script").read_bytes() == UDHCPC_SCRIPT


def test_busybox_init_script_parses() -> None:
    # busybox's own shell is the judge of the scripts' syntax.
    subprocess.run(["/bin/busybox", "sh", "-n", "-c", BUSYBOX_INIT], check=True)
    subprocess.run(["/bin/busybox", "sh", "-n", "-c", UDHCPC_SCRIPT.decode()], check=True)


def test_rebuild_leaves_an_identical_archive_alone(tmp_path: Path) -> None:
    out = build_busybox_initramfs(tmp_path / "bb.cpio")
    os.utime(out, (1, 1))
    build_busybox_initramfs(out)
    assert out.stat().st_mtime == 1
    out.write_bytes(b"stale")
    build_busybox_initramfs(out)
    assert out.stat().st_size > 1_000_000


def test_single_init_initramfs(tmp_path: Path) -> None:
    init = tmp_path / "prog"
    init.write_bytes(b"\x7fELF fake program")
    helper = tmp_path / "helper.sh"
    helper.write_text("#!/bin/sh\n")
    helper.chmod(0o755)
    out = build_single_init_initramfs(
        init,
        tmp_path / "one.cpio",
        extra_files={"/etc/deep/conf": b"x=1\n", "usr/bin/helper": helper},
    )
    rows = _listing(out)
    assert rows["init"].startswith("-rwxr-xr-x")
    assert rows["dev/console"].startswith("crw")
    assert rows["etc/deep"].startswith("d") and rows["etc/deep/conf"].startswith("-rw-r--r--")
    assert rows["usr/bin/helper"].startswith("-rwxr-xr-x")
    assert "bin/busybox" not in rows
    dest = tmp_path / "x"
    dest.mkdir()
    _extract(out, dest, "init", "etc/deep/conf")
    assert (dest / "init").read_bytes() == init.read_bytes()
    assert (dest / "etc/deep/conf").read_bytes() == b"x=1\n"


def test_missing_inputs_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read the init program"):
        build_single_init_initramfs(tmp_path / "nope", tmp_path / "o.cpio")
    with pytest.raises(ImageError, match="busybox-static"):
        build_busybox_initramfs(tmp_path / "o.cpio", busybox=tmp_path / "nope")
    fake = tmp_path / "busybox"
    fake.write_text("#!/bin/sh\n")
    with pytest.raises(ImageError, match="not an ELF"):
        build_busybox_initramfs(tmp_path / "o.cpio", busybox=fake)
    init = tmp_path / "i"
    init.write_bytes(b"x")
    with pytest.raises(ImageError):
        build_single_init_initramfs(init, tmp_path / "o.cpio", extra_files={"../esc": b""})
    assert not (tmp_path / "o.cpio").exists()  # nothing half-built is left behind

"""Image locking: QEMU's lock bytes (kvmlite/backends/block/locking.py), judged by QEMU too."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlite.backends.block import RawBackend, open_image
from kvmlite.backends.block.locking import ImageLockError, lock_holders
from kvmlite.backends.block.qcow2 import Qcow2Backend
from kvmlite.backends.block.qcow2.create import create_qcow2
from kvmlite.errors import ImageError

needs_qemu_img = pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img")


@pytest.fixture(params=["raw", "qcow2"])
def image(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    p = tmp_path / f"d.{request.param}"
    if request.param == "raw":
        p.write_bytes(bytes(1 << 20))
    else:
        create_qcow2(str(p), 1 << 20)
    return p


def held_bytes(img: object) -> set[int]:
    """The bytes the image's fd holds OFD locks on (from its /proc fdinfo)."""
    fd = img.fileno() if isinstance(img, RawBackend) else img.f.fd  # type: ignore[attr-defined]
    held: set[int] = set()
    with open(f"/proc/self/fdinfo/{fd}") as fh:
        for line in fh:
            if line.startswith("lock:") and "OFDLCK" in line:
                start, end = line.split()[-2:]
                held.update(range(int(start), int(end) + 1))
    return held


def test_lock_bytes_are_qemus(image: Path) -> None:
    # What QEMU 7.2 holds for a guest disk (its /proc/locks): rw 100, 101, 201; ro 100, 201.
    with open_image(str(image)) as rw:
        assert held_bytes(rw) == {100, 101, 201}
    with open_image(str(image), read_only=True) as ro:
        assert held_bytes(ro) == {100, 201}
    with open_image(str(image), read_only=True, force_share=True) as fs:
        assert held_bytes(fs) == {100}


def test_two_writers_are_refused(image: Path) -> None:
    with open_image(str(image)):
        with pytest.raises(ImageLockError) as e:
            open_image(str(image))
    msg = str(e.value)
    assert str(image) in msg and '"write"' in msg and "this process" in msg
    with open_image(str(image)):  # the refused open left nothing behind
        pass


def test_readers_share_and_keep_writers_out(image: Path) -> None:
    with open_image(str(image), read_only=True), open_image(str(image), read_only=True):
        with pytest.raises(ImageLockError, match='"write"'):
            open_image(str(image))
    with open_image(str(image)):
        with pytest.raises(ImageLockError, match='shared "write"'):
            open_image(str(image), read_only=True)
        # force-share reads an image that is being written (qemu-img -U)
        with open_image(str(image), read_only=True, force_share=True):
            pass


def test_locking_off_and_force_share_rules(image: Path) -> None:
    with open_image(str(image)):
        with open_image(str(image), locking=False):
            pass
    with pytest.raises(ImageError, match="force-share needs a read-only"):
        open_image(str(image), force_share=True)


def test_backing_files_are_locked_read_only(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    create_qcow2(str(base), 1 << 20)
    top = tmp_path / "top.qcow2"
    create_qcow2(str(top), 1 << 20, backing_file=str(base), backing_format="qcow2")
    with Qcow2Backend(str(top)):
        with pytest.raises(ImageLockError, match="base.qcow2"):
            open_image(str(base))  # a writer of the base under a running overlay
        with open_image(str(base), read_only=True):  # another reader is fine
            pass
    with open_image(str(base)):
        with pytest.raises(ImageLockError):
            Qcow2Backend(str(top))


def test_holder_is_named(tmp_path: Path) -> None:
    p = tmp_path / "d.raw"
    p.write_bytes(bytes(4096))
    with open_image(str(p)) as img:
        fd = os.open(p, os.O_RDONLY)
        try:
            assert lock_holders(fd, 101) == ["this process"]
        finally:
            os.close(fd)
        assert lock_holders(img.fileno(), 101) == []  # its own fd is not a holder


# -- QEMU as the judge --------------------------------------------------------------


def qemu_img_info(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qemu-img", "info", *extra, str(path)], capture_output=True, text=True, timeout=60
    )


@needs_qemu_img
def test_qemu_refuses_an_image_kvmlite_writes(image: Path) -> None:
    fmt = image.suffix[1:]
    with open_image(str(image)):
        r = qemu_img_info(image)
        # qemu-img info shares writing of a raw file's data (QEMU does the same to
        # a raw image QEMU writes); qcow2 metadata it does not share.
        if fmt == "qcow2":
            assert r.returncode != 0 and 'Failed to get shared "write" lock' in r.stderr
        assert qemu_img_info(image, "-U").returncode == 0
        r = subprocess.run(
            ["qemu-io", "-f", fmt, "-c", "write 0 512", str(image)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0 and "lock" in r.stderr
    assert qemu_img_info(image).returncode == 0


@needs_qemu_img
def test_qemu_reads_beside_kvmlite_reading(image: Path) -> None:
    with open_image(str(image), read_only=True):
        assert qemu_img_info(image).returncode == 0
        r = subprocess.run(
            ["qemu-io", "-f", image.suffix[1:], "-c", "write 0 512", str(image)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0 and '"write" lock' in r.stderr


@pytest.fixture
def qemu_holding(image: Path) -> Iterator[subprocess.Popen[str]]:
    """QEMU (stopped, -S) with ``image`` as a read-write virtio disk."""
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("needs qemu-system-x86_64")
    proc = subprocess.Popen(
        [
            "qemu-system-x86_64",
            "-S",
            "-display",
            "none",
            "-monitor",
            "none",
            "-nodefaults",
            "-drive",
            f"file={image},format={image.suffix[1:]},if=virtio",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


def test_kvmlite_refuses_an_image_qemu_writes(
    image: Path, qemu_holding: subprocess.Popen[str]
) -> None:
    deadline = time.monotonic() + 30
    while True:  # bounded poll: until QEMU has opened (and locked) the image
        try:
            with open_image(str(image), read_only=True):
                pass
        except ImageLockError as e:
            err = str(e)
            break
        assert qemu_holding.poll() is None, qemu_holding.stderr.read()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "QEMU never locked the image"
        time.sleep(0.05)
    assert f"process {qemu_holding.pid} (qemu-system-x86)" in err
    with pytest.raises(ImageLockError, match='"write"'):
        open_image(str(image))
    with open_image(str(image), read_only=True, force_share=True):
        pass


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_create_over_an_image_in_use_is_refused(tmp_path: Path, fmt: str) -> None:
    from kvmlite.backends.block.imgops import create_image

    p = tmp_path / "d.img"
    p.write_bytes(b"\x5a" * 65536)
    with open_image(str(p), "raw"):
        with pytest.raises(ImageLockError, match='"write"'):
            create_image(str(p), fmt, 1 << 20, {})
    assert p.read_bytes() == b"\x5a" * 65536  # not emptied
    create_image(str(p), fmt, 1 << 20, {})
    with open_image(str(p)) as img:
        assert img.size == 1 << 20


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_img_commands_refuse_an_image_in_use_unless_force_share(
    tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from kvmlite import imgtool

    p = tmp_path / f"d.{fmt}"
    assert imgtool.main(["create", "-f", fmt, str(p), "1M"]) == 0
    with open_image(str(p)):  # a running VM, say
        for cmd in (["info"], ["map"], ["check"] if fmt == "qcow2" else ["info"]):
            capsys.readouterr()
            assert imgtool.main([*cmd, str(p)]) == 1
            out = capsys.readouterr()  # img check reports on stdout, as qemu-img does
            assert '"write" lock' in out.err + out.out and "-U" in out.err + out.out
            assert imgtool.main([*cmd, "-U", str(p)]) == 0
        assert imgtool.main(["compare", "-U", str(p), str(p)]) == 0
        assert imgtool.main(["resize", str(p), "2M"]) == 1  # a writer is always refused

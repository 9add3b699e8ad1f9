"""RawBackend: zero-copy vectored I/O, holes (SEEK_HOLE/SEEK_DATA, PUNCH_HOLE), errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmlite.backends.block.raw import RawBackend
from kvmlite.errors import ImageError

MiB = 1 << 20


def _raw(tmp_path: Path, size: int = 4 * MiB) -> Path:
    p = tmp_path / "d.raw"
    with open(p, "wb") as f:
        f.truncate(size)
    return p


def test_readv_writev_scatter_gather(tmp_path: Path) -> None:
    p = _raw(tmp_path)
    with RawBackend(str(p)) as d:
        assert d.size == 4 * MiB
        a, b = bytearray(b"A" * 1000), bytearray(b"B" * 3096)
        assert d.writev(8192, [memoryview(a), memoryview(b)]) == 4096
        out1, out2 = bytearray(100), bytearray(3996)
        assert d.readv(8192 + 900, [memoryview(out1), memoryview(out2)]) == 4096
        assert out1 == b"A" * 100 and out2 == b"B" * 3096 + bytes(900)
    assert p.read_bytes()[8192 : 8192 + 1000] == b"A" * 1000


def test_out_of_range_is_value_error(tmp_path: Path) -> None:
    with RawBackend(str(_raw(tmp_path))) as d:
        with pytest.raises(ValueError):
            d.read(4 * MiB - 10, 11)
        with pytest.raises(ValueError):
            d.write(-1, b"x")


def test_read_only(tmp_path: Path) -> None:
    with RawBackend(str(_raw(tmp_path)), read_only=True) as d:
        with pytest.raises(PermissionError):
            d.write(0, b"x")
        with pytest.raises(PermissionError):
            d.discard(0, 4096)


def test_sparse_extents_and_punch_hole(tmp_path: Path) -> None:
    p = _raw(tmp_path)
    with RawBackend(str(p)) as d:
        assert [(e.data, e.zero) for e in d.extents()] == [(False, True)]
        d.write(MiB, os.urandom(MiB))
        d.flush()
        data = [(e.offset, e.length) for e in d.extents() if e.data]
        assert data == [(MiB, MiB)]
        d.discard(MiB, 512 * 1024)
        assert d.read(MiB, 512 * 1024) == bytes(512 * 1024)
        data = [(e.offset, e.length) for e in d.extents() if e.data]
        assert data == [(MiB + 512 * 1024, 512 * 1024)]
        d.write_zeroes(MiB + 512 * 1024, 4096)
        assert d.read(MiB + 512 * 1024, 4096) == bytes(4096)
        assert d.size == 4 * MiB  # KEEP_SIZE


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        RawBackend(str(tmp_path / "missing.raw"))
    with pytest.raises(ImageError, match="directory"):
        RawBackend(str(tmp_path))


def test_direct_io(tmp_path: Path) -> None:
    """O_DIRECT works here (ext4) or fails with a message naming it, never silently."""
    p = _raw(tmp_path)
    try:
        d = RawBackend(str(p), direct=True)
    except ImageError as e:
        assert "O_DIRECT" in str(e)
        return
    import mmap

    buf = mmap.mmap(-1, 4096)  # page-aligned, as guest RAM is
    buf[:] = b"D" * 4096
    with d:
        d.writev(4096, [memoryview(buf)])
        out = mmap.mmap(-1, 4096)
        d.readv(4096, [memoryview(out)])
        assert out[:] == b"D" * 4096


def test_block_device_size_via_lseek(tmp_path: Path) -> None:
    """Size comes from lseek(SEEK_END), which is what works on block devices too."""
    p = _raw(tmp_path, 3 * MiB + 512)
    with RawBackend(str(p)) as d:
        assert d.size == 3 * MiB + 512


def test_probed_raw_refuses_qcow2_magic_in_sector_0(tmp_path: Path) -> None:
    p = _raw(tmp_path)
    with RawBackend(str(p), probed=True) as d:
        with pytest.raises(OSError, match="format=raw"):
            d.write(0, b"QFI\xfb" + bytes(508))
        d.write(0, b"QF")  # half a magic is not a magic
        with pytest.raises(OSError):
            d.write(2, b"I\xfb")  # completing it is refused
        d.write(512, b"QFI\xfb")  # not sector 0: fine
    with RawBackend(str(p)) as d:  # format given explicitly: allowed
        d.write(0, b"QFI\xfb")


def test_probed_direct_image_takes_a_sector_0_write(tmp_path: Path) -> None:
    """The sector-0 magic check reads the head with O_DIRECT's alignment (it once read 4
    bytes into an unaligned buffer: EINVAL, and the guest's write to sector 0 failed)."""
    import mmap

    p = _raw(tmp_path)
    try:
        d = RawBackend(str(p), direct=True, probed=True)
    except ImageError:
        pytest.skip("no O_DIRECT on this filesystem")
    buf = mmap.mmap(-1, 4096)
    buf[:] = b"S" * 4096
    with d:
        assert d.writev(0, [memoryview(buf)]) == 4096
        buf[:4] = b"QFI\xfb"
        with pytest.raises(OSError, match="format=raw"):
            d.writev(0, [memoryview(buf)])
    assert p.read_bytes()[:4096] == b"S" * 4096

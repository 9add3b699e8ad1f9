"""Images written by qemu-img/qemu-io read identically through kvmlite (qcow2.txt).

Every cluster size, both versions, compressed clusters (zlib, zstd), zero
clusters, backing chains (raw and qcow2 backing, relative names, the backing
format extension) and internal snapshots.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmlite.backends.block import open_image
from kvmlite.backends.block.qcow2 import Qcow2Backend
from kvmlite.backends.block.qcow2.compress import zstd_available

from .helpers import qemu_create, qemu_io, qemu_raw, run

SIZE = 4 << 20
WRITES = (
    "write -P 0x11 0 5000",
    "write -P 0x22 65000 70000",
    "write -z 200k 64k",
    "write -P 0x33 1M 512",
    "write -P 0x44 3M 1M",
    "discard 3200k 64k",
)


def read_all(path: Path, fmt: str | None = None) -> bytes:
    with open_image(str(path), fmt, read_only=True) as d:
        return d.read(0, d.size)


@pytest.mark.parametrize("cluster", [1 << b for b in range(9, 22)])
@pytest.mark.parametrize("compat", ["0.10", "1.1"])
def test_cluster_sizes_and_versions(tmp_path: Path, cluster: int, compat: str) -> None:
    img = tmp_path / "a.qcow2"
    qemu_create(img, SIZE, f"cluster_size={cluster}", f"compat={compat}")
    qemu_io(img, *WRITES)
    assert read_all(img) == qemu_raw(img, tmp_path / "ref.raw")


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16, 32, 64])
def test_refcount_orders(tmp_path: Path, bits: int) -> None:
    img = tmp_path / "a.qcow2"
    qemu_create(img, SIZE, f"refcount_bits={bits}", "cluster_size=4096")
    qemu_io(img, *WRITES)
    assert read_all(img) == qemu_raw(img, tmp_path / "ref.raw")
    with Qcow2Backend(str(img), read_only=True) as q:
        assert q.refcounts.bits == bits
        assert q.refcounts.get(0) == 1


@pytest.mark.parametrize("cluster", [512, 4096, 65536, 1 << 21])
@pytest.mark.parametrize("compat", ["0.10", "1.1"])
def test_convert_compressed_zlib(tmp_path: Path, cluster: int, compat: str) -> None:
    raw = tmp_path / "src.raw"
    data = bytearray(SIZE)
    for i in range(0, SIZE, 7919):
        data[i : i + 100] = bytes([i % 251]) * 100
    raw.write_bytes(bytes(data))
    img = tmp_path / "c.qcow2"
    run(
        "qemu-img",
        "convert",
        "-c",
        "-O",
        "qcow2",
        "-o",
        f"cluster_size={cluster},compat={compat}",
        str(raw),
        str(img),
    )
    assert read_all(img) == bytes(data)
    with open_image(str(img), read_only=True) as d:
        assert any(e.compressed for e in d.extents())


def test_compressed_zstd(tmp_path: Path) -> None:
    assert zstd_available(), "install the zstandard module (make deps)"
    img = tmp_path / "z.qcow2"
    qemu_create(img, SIZE, "compression_type=zstd")
    qemu_io(img, "write -c -P 0x5a 0 64k", "write -c -P 0x6b 128k 64k", "write -P 1 1M 4k")
    assert read_all(img) == qemu_raw(img, tmp_path / "ref.raw")


def test_backing_chain_relative_and_formats(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(bytes(range(256)) * (SIZE // 256))
    sub = tmp_path / "sub"
    sub.mkdir()
    mid = sub / "mid.qcow2"
    top = sub / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "../base.raw", "-F", "raw", str(mid))
    qemu_io(mid, "write -P 0x77 64k 64k", "write -z 1M 128k")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", str(top))
    qemu_io(top, "write -P 0x88 96k 8k", "write -c -P 0x99 2M 64k")
    expect = qemu_raw(top, tmp_path / "ref.raw")
    assert read_all(top) == expect
    with open_image(str(top), read_only=True) as d:
        depths = {e.depth for e in d.extents()}
    assert depths == {0, 1, 2}


def test_backing_without_format_extension_is_probed(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    qemu_create(base, SIZE)
    qemu_io(base, "write -P 0x42 0 1M")
    top = tmp_path / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(top))
    # Drop the backing format extension, as old QEMU versions wrote images.
    with Qcow2Backend(str(top), open_backing=False) as q:
        q.set_backing("base.qcow2", None)
    info = run("qemu-img", "info", str(top)).stdout
    assert "backing file: base.qcow2" in info and "backing file format" not in info
    with Qcow2Backend(str(top), read_only=True) as q:
        assert q.header.backing_format is None
        assert q.read(0, 16) == b"\x42" * 16


def test_backing_smaller_than_overlay(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"\xab" * 100_000)
    top = tmp_path / "top.qcow2"
    run(
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(top), str(SIZE)
    )
    data = read_all(top)
    assert data[:100_000] == b"\xab" * 100_000 and data[100_000:] == bytes(SIZE - 100_000)


def test_internal_snapshots_listed_and_readable(tmp_path: Path) -> None:
    img = tmp_path / "s.qcow2"
    qemu_create(img, SIZE)
    qemu_io(img, "write -P 0x01 0 128k")
    run("qemu-img", "snapshot", "-c", "first", str(img))
    qemu_io(img, "write -P 0x02 64k 128k")
    run("qemu-img", "snapshot", "-c", "second", str(img))
    qemu_io(img, "write -P 0x03 0 4k")
    with Qcow2Backend(str(img), read_only=True) as q:
        assert [s.name for s in q.snapshots] == ["first", "second"]
        assert q.snapshots[0].disk_size == SIZE
    with Qcow2Backend(str(img), snapshot="first") as s1:
        assert s1.read_only
        assert s1.read(0, 128 << 10) == b"\x01" * (128 << 10)
        assert s1.read(128 << 10, 64 << 10) == bytes(64 << 10)
    with Qcow2Backend(str(img), snapshot="2") as s2:  # by id
        assert s2.read(60 << 10, 8 << 10) == b"\x01" * 4096 + b"\x02" * 4096
    assert read_all(img)[:4096] == b"\x03" * 4096

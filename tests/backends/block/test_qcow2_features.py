"""Lazy refcounts and the dirty bit, flush durability, thread safety, autoclear bits."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import pytest

from kvmlite.backends.block import open_image
from kvmlite.backends.block.qcow2 import Qcow2Backend, create_qcow2
from kvmlite.backends.block.raw import RawBackend

from .helpers import assert_clean, qemu_create, qemu_io, run


def test_lazy_refcounts_sets_dirty_while_open(tmp_path: Path) -> None:
    p = tmp_path / "l.qcow2"
    create_qcow2(str(p), 8 << 20, lazy_refcounts=True)
    with Qcow2Backend(str(p)) as q:
        q.write(0, b"\x01" * 70000)
        with Qcow2Backend(str(p), read_only=True, force_share=True) as peek:
            assert peek.header.incompatible_features & 1
        assert "dirty-flag" in run("qemu-img", "info", "-U", "--output=json", str(p)).stdout
    info = run("qemu-img", "info", "--output=json", str(p)).stdout
    assert '"dirty-flag": false' in info and '"lazy-refcounts": true' in info
    assert_clean(p)


def test_flush_reaches_fdatasync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    p = tmp_path / "f.qcow2"
    create_qcow2(str(p), 1 << 20)
    with Qcow2Backend(str(p)) as q:
        q.write(0, b"x" * 512)
        calls.clear()
        q.flush()
        assert calls == [q.f.fd]
    r = tmp_path / "f.raw"
    r.write_bytes(bytes(4096))
    with RawBackend(str(r)) as d:
        calls.clear()
        d.flush()
        assert calls == [d.fileno()]


def test_concurrent_io_threads(tmp_path: Path) -> None:
    p = tmp_path / "t.qcow2"
    size = 8 << 20
    create_qcow2(str(p), size, cluster_size=4096)
    disk = open_image(str(p))
    chunk = size // 8
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            base = i * chunk
            for j in range(0, chunk, 12288):
                n = min(12288, chunk - j)
                disk.writev(base + j, [memoryview(bytes([i + 1]) * n)])
                buf = bytearray(n)
                disk.readv(base + j, [memoryview(buf)])
                assert buf == bytes([i + 1]) * n
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def churn() -> None:
        """Discards and flushes elsewhere: freed clusters get reused meanwhile."""
        try:
            for k in range(30):
                disk.writev(size - (1 << 20), [memoryview(bytes([k]) * (1 << 20))])
                disk.discard(size - (1 << 20), 1 << 20)
                disk.flush()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(7)]
    threads.append(threading.Thread(target=churn))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    data = disk.read(0, size)
    disk.close()
    assert all(data[i * chunk : (i + 1) * chunk] == bytes([i + 1]) * chunk for i in range(7))
    assert data[7 * chunk :] == bytes(chunk)
    assert_clean(p)


def test_autoclear_bits_cleared_on_write_open(tmp_path: Path) -> None:
    p = tmp_path / "a.qcow2"
    qemu_create(p, 1 << 20)
    with open(p, "r+b") as f:
        f.seek(88)
        f.write(struct.pack(">Q", 1))
    with Qcow2Backend(str(p), read_only=True) as q:
        assert q.header.autoclear_features == 1
    with Qcow2Backend(str(p)) as q:
        assert q.header.autoclear_features == 0
    with Qcow2Backend(str(p), read_only=True) as q:
        assert q.header.autoclear_features == 0
    assert_clean(p)


def test_version2_write_zeroes_over_backing_stores_zeros(tmp_path: Path) -> None:
    base = tmp_path / "b.raw"
    base.write_bytes(b"\xff" * (1 << 20))
    p = tmp_path / "v2.qcow2"
    create_qcow2(str(p), 1 << 20, version=2, backing_file="b.raw", backing_format="raw")
    with Qcow2Backend(str(p)) as q:
        q.write_zeroes(0, 256 << 10)
        assert q.read(0, 256 << 10) == bytes(256 << 10)
        assert q.read(256 << 10, 4) == b"\xff" * 4
    assert_clean(p)


def test_non_cluster_aligned_size(tmp_path: Path) -> None:
    p = tmp_path / "odd.qcow2"
    size = (1 << 20) + 512
    create_qcow2(str(p), size)
    with Qcow2Backend(str(p)) as q:
        q.write(size - 1024, b"\x07" * 1024)
        q.write_zeroes(size - 512, 512)
        assert q.read(size - 1024, 1024) == b"\x07" * 512 + bytes(512)
        with pytest.raises(ValueError):
            q.read(size - 511, 512)
    ref = tmp_path / "ref.qcow2"
    qemu_create(ref, size)
    qemu_io(ref, f"write -P 7 {size - 1024} 512")
    assert_clean(p)
    run("qemu-img", "compare", str(p), str(ref))

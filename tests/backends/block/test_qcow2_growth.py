"""Refcount table growth, L1 growth and the allocator, judged by qemu-img check.

With 512-byte clusters and wide refcounts a refcount block covers only a few
clusters, so a few MiB of writes move the refcount table several times.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmlite.backends.block.qcow2 import Qcow2Backend, create_qcow2
from kvmlite.backends.block.qcow2.refcount import RESERVE_BYTES

from .helpers import assert_clean, qemu_compare


@pytest.mark.parametrize("bits", [16, 64])
def test_refcount_table_grows(tmp_path: Path, bits: int) -> None:
    p = tmp_path / "g.qcow2"
    size = 64 << 20
    create_qcow2(str(p), size, cluster_size=512, refcount_bits=bits)
    model = bytearray(size)
    with Qcow2Backend(str(p)) as q:
        first_table = q.refcounts.table_offset
        for i in range(200 if bits == 16 else 60):
            off = (i * 1_600_003) % (size - 65536) // 512 * 512
            data = os.urandom(65536)
            q.write(off, data)
            model[off : off + 65536] = data
        assert q.refcounts.table_offset != first_table, "the table should have moved"
        assert q.read(0, size) == model
    assert_clean(p)
    ref = tmp_path / "model.raw"
    ref.write_bytes(bytes(model))
    qemu_compare(p, ref, "qcow2", "raw")


def test_freed_clusters_are_reused(tmp_path: Path) -> None:
    p = tmp_path / "r.qcow2"
    create_qcow2(str(p), 32 << 20, cluster_size=65536)
    with Qcow2Backend(str(p)) as q:
        q.write(0, b"\x01" * (8 << 20))
        q.flush()
        length = q.f.length
        q.discard(0, 8 << 20)
        q.flush()  # frees are applied after the sync
        q.write(16 << 20, b"\x02" * (8 << 20))
        q.flush()
        # at most one reservation batch beyond the old end: the rest was reused
        assert q.f.length <= length + RESERVE_BYTES + (1 << 20)
    assert_clean(p)

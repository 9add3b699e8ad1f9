"""Randomised operation sequences (hypothesis) against a plain bytearray model.

Each example creates a qcow2 image (random cluster size, version, refcount
width, optional backing file), applies writes, zero-writes, discards, flushes
and reopens, compares every read with the model, and ends with
``qemu-img check`` and ``qemu-img compare`` against the model as raw.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmlite.backends.block.qcow2 import Qcow2Backend, create_qcow2

from .helpers import assert_clean, qemu_compare, qemu_create, qemu_io, qemu_raw, run

SIZE = 1 << 20
# A longer run: KVMLITE_MODEL_EXAMPLES=500 pytest tests/backends/block/test_qcow2_model.py
EXAMPLES = int(os.environ.get("KVMLITE_MODEL_EXAMPLES", "0"))


def _op() -> st.SearchStrategy:
    offset = st.integers(0, SIZE - 1)
    length = st.integers(1, 150_000)
    return st.one_of(
        st.tuples(st.just("write"), offset, length, st.integers(1, 255)),
        st.tuples(st.just("zero"), offset, length, st.just(0)),
        st.tuples(st.just("discard"), offset, length, st.just(0)),
        st.tuples(st.just("read"), offset, length, st.just(0)),
        st.tuples(st.just("flush"), st.just(0), st.just(0), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0), st.just(0)),
    )


config = st.tuples(
    st.sampled_from([512, 4096, 65536, 1 << 21]),
    st.sampled_from([2, 3]),
    st.sampled_from([1, 4, 16, 64]),
    st.booleans(),
)


@pytest.mark.slow
@settings(max_examples=EXAMPLES or 25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=config, ops=st.lists(_op(), min_size=1, max_size=25))
def test_random_ops_match_model(cfg: tuple[int, int, int, bool], ops: list) -> None:
    cluster, version, bits, with_backing = cfg
    if version == 2:
        bits = 16
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.qcow2"
        model = bytearray(SIZE)
        backing = None
        if with_backing:
            base = Path(d) / "base.raw"
            model[:] = os.urandom(SIZE)
            base.write_bytes(bytes(model))
            backing = "base.raw"
        create_qcow2(
            str(path),
            SIZE,
            cluster_size=cluster,
            version=version,
            refcount_bits=bits,
            backing_file=backing,
            backing_format="raw" if backing else None,
        )
        q = Qcow2Backend(str(path))
        try:
            for op, off, n, pat in ops:
                n = min(n, SIZE - off)
                if op == "write":
                    data = bytes([pat]) * n
                    q.write(off, data)
                    model[off : off + n] = data
                elif op == "zero":
                    q.write_zeroes(off, n)
                    model[off : off + n] = bytes(n)
                elif op == "discard":
                    q.discard(off, n)
                    start = -(-off // cluster) * cluster
                    end = (off + n) // cluster * cluster if off + n != SIZE else SIZE
                    if end > start:
                        model[start:end] = bytes(end - start)
                elif op == "read":
                    assert q.read(off, n) == model[off : off + n]
                elif op == "flush":
                    q.flush()
                else:
                    q.close()
                    q = Qcow2Backend(str(path))
            assert q.read(0, SIZE) == model
        finally:
            q.close()
        assert_clean(path)
        ref = Path(d) / "model.raw"
        ref.write_bytes(bytes(model))
        qemu_compare(path, ref, "qcow2", "raw")


_SNAP_TEMPLATE: dict[str, bytes] = {}


def _snapshot_template() -> tuple[bytes, bytes]:
    """A qemu-made image with compressed, zero and plain clusters and a snapshot."""
    if not _SNAP_TEMPLATE:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "s.qcow2"
            qemu_create(p, SIZE, "cluster_size=4096")
            qemu_io(
                p,
                "write -P 0x10 0 256k",
                "write -c -P 0x20 256k 64k",
                "write -z 320k 64k",
                "write -P 0x30 512k 128k",
            )
            run("qemu-img", "snapshot", "-c", "snap", str(p))
            _SNAP_TEMPLATE["img"] = p.read_bytes()
            _SNAP_TEMPLATE["raw"] = qemu_raw(p, Path(d) / "r.raw")
    return _SNAP_TEMPLATE["img"], _SNAP_TEMPLATE["raw"]


@settings(max_examples=EXAMPLES or 15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op(), min_size=1, max_size=20))
def test_random_ops_on_image_with_snapshot(ops: list) -> None:
    image, content = _snapshot_template()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.qcow2"
        path.write_bytes(image)
        model = bytearray(content)
        q = Qcow2Backend(str(path))
        try:
            for op, off, n, pat in ops:
                n = min(n, SIZE - off)
                if op == "write":
                    q.write(off, bytes([pat]) * n)
                    model[off : off + n] = bytes([pat]) * n
                elif op in ("zero", "discard"):
                    q.write_zeroes(off, n)
                    model[off : off + n] = bytes(n)
                elif op == "read":
                    assert q.read(off, n) == model[off : off + n]
                elif op == "flush":
                    q.flush()
                else:
                    q.close()
                    q = Qcow2Backend(str(path))
            assert q.read(0, SIZE) == model
        finally:
            q.close()
        assert_clean(path)
        with Qcow2Backend(str(path), snapshot="snap") as s:
            assert s.read(0, SIZE) == content

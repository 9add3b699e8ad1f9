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

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmlite.backends.block.qcow2 import Qcow2Backend, create_qcow2

from .helpers import assert_clean, qemu_compare

SIZE = 1 << 20


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


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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

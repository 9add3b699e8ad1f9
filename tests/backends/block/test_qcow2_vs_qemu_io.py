"""Images written by kvmlite match a reference written by qemu-io with the same
operations (``qemu-img compare``) and pass ``qemu-img check``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmlite.backends.block.qcow2 import Qcow2Backend, create_qcow2

from .helpers import assert_clean, qemu_compare, qemu_create, qemu_io, run

SIZE = 8 << 20
# (qemu-io command, kvmlite operation)
OPS = [
    ("write -P 0x11 0 4096", ("w", 0, 4096, 0x11)),
    ("write -P 0x22 1000 70000", ("w", 1000, 70000, 0x22)),
    ("write -P 0x33 2M 1M", ("w", 2 << 20, 1 << 20, 0x33)),
    ("write -z 2100k 100k", ("z", 2100 << 10, 100 << 10, 0)),
    ("write -P 0x44 8384512 4096", ("w", SIZE - 4096, 4096, 0x44)),
    ("write -z 0 64k", ("z", 0, 64 << 10, 0)),
    ("write -P 0x55 512 512", ("w", 512, 512, 0x55)),
    ("discard 2M 128k", ("d", 2 << 20, 128 << 10, 0)),
]


def apply(path: Path, ops: list[tuple[str, int, int, int]]) -> None:
    with Qcow2Backend(str(path)) as q:
        for op, off, n, pat in ops:
            if op == "w":
                q.write(off, bytes([pat]) * n)
            elif op == "z":
                q.write_zeroes(off, n)
            else:
                q.discard(off, n)
        q.flush()


@pytest.mark.parametrize(
    "cluster,compat,bits",
    [
        (65536, "1.1", 16),
        (512, "1.1", 16),
        (4096, "0.10", 16),
        (1 << 21, "1.1", 1),
        (65536, "1.1", 64),
        (16384, "1.1", 4),
    ],
)
def test_same_ops_same_image(tmp_path: Path, cluster: int, compat: str, bits: int) -> None:
    ref, mine = tmp_path / "ref.qcow2", tmp_path / "mine.qcow2"
    opts = (f"cluster_size={cluster}", f"compat={compat}", f"refcount_bits={bits}")
    qemu_create(ref, SIZE, *opts)
    qemu_io(ref, *(c for c, _ in OPS))
    create_qcow2(
        str(mine),
        SIZE,
        cluster_size=cluster,
        version=2 if compat == "0.10" else 3,
        refcount_bits=bits,
    )
    assert_clean(mine)
    apply(mine, [o for _, o in OPS])
    assert_clean(mine)
    qemu_compare(mine, ref)


def test_kvmlite_writes_on_qemu_image(tmp_path: Path) -> None:
    """Open a qemu-made image with compressed and zero clusters and overwrite them."""
    ref, mine = tmp_path / "ref.qcow2", tmp_path / "mine.qcow2"
    for p in (ref, mine):
        qemu_create(p, SIZE)
        qemu_io(
            p,
            "write -c -P 0x61 0 64k",
            "write -c -P 0x62 64k 64k",
            "write -z 1M 64k",
            "write -P 0x63 2M 64k",
        )
    more = [
        ("write -P 0x70 4k 4k", ("w", 4096, 4096, 0x70)),
        ("write -P 0x71 1M 4k", ("w", 1 << 20, 4096, 0x71)),
        ("write -P 0x72 2M 512", ("w", 2 << 20, 512, 0x72)),
    ]
    qemu_io(ref, *(c for c, _ in more))
    apply(mine, [o for _, o in more])
    assert_clean(mine)
    qemu_compare(mine, ref)


def test_overlay_copy_on_write(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    qemu_create(base, SIZE, "cluster_size=4096")
    qemu_io(base, "write -P 0xaa 0 8M")
    ref, mine = tmp_path / "ref.qcow2", tmp_path / "mine.qcow2"
    for p in (ref, mine):
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(p))
    qemu_io(ref, *(c for c, _ in OPS))
    apply(mine, [o for _, o in OPS])
    assert_clean(mine)
    assert_clean(base)
    qemu_compare(mine, ref)
    # The base was not written.
    run(
        "qemu-img",
        "compare",
        "-f",
        "qcow2",
        "-F",
        "raw",
        str(base),
        str(_filled(tmp_path / "aa.raw", 0xAA)),
    )


def _filled(path: Path, byte: int) -> Path:
    path.write_bytes(bytes([byte]) * SIZE)
    return path


def test_writes_on_image_with_snapshots(tmp_path: Path) -> None:
    """Shared clusters and L2 tables (refcount 2) are copied on write."""
    img = tmp_path / "s.qcow2"
    qemu_create(img, SIZE)
    qemu_io(img, "write -P 0x01 0 1M", "write -c -P 0x05 2M 64k")
    run("qemu-img", "snapshot", "-c", "snap", str(img))
    with Qcow2Backend(str(img)) as q:
        q.write(4096, b"\x02" * 4096)
        q.write(2 << 20, b"\x03" * 100)
        q.write_zeroes(512 << 10, 64 << 10)
    assert_clean(img)
    with Qcow2Backend(str(img), snapshot="snap") as s:
        assert s.read(0, 1 << 20) == b"\x01" * (1 << 20)
        assert s.read(2 << 20, 64 << 10) == b"\x05" * (64 << 10)
    with Qcow2Backend(str(img), read_only=True) as q:
        assert q.read(4096, 4096) == b"\x02" * 4096
        assert q.read(0, 4096) == b"\x01" * 4096
        assert q.read(2 << 20, 200) == b"\x03" * 100 + b"\x05" * 100
        assert q.read(512 << 10, 64 << 10) == bytes(64 << 10)

"""Creating empty qcow2 images (what ``qemu-img create -f qcow2`` writes; qcow2.txt).

Layout: the header cluster, the L1 table, a one-cluster refcount table, then
the refcount blocks that describe all of these (created through the normal
refcount code, which grows the table if one cluster is not enough).
"""

from __future__ import annotations

import os

from kvmlite.backends.block.locking import create_locked
from kvmlite.backends.block.qcow2 import header as hdr
from kvmlite.backends.block.qcow2.hostfile import HostFile
from kvmlite.backends.block.qcow2.refcount import Refcounts
from kvmlite.errors import ImageError

REFCOUNT_BITS = (1, 2, 4, 8, 16, 32, 64)


def create_qcow2(
    path: str,
    size: int,
    *,
    version: int = 3,
    cluster_size: int = 65536,
    refcount_bits: int = 16,
    backing_file: str | None = None,
    backing_format: str | None = None,
    lazy_refcounts: bool = False,
    compression_type: str = "zlib",
) -> None:
    """Write a new, empty qcow2 image at ``path`` (overwriting any file there)."""
    cluster_bits = cluster_size.bit_length() - 1
    if cluster_size != 1 << cluster_bits or not (
        hdr.MIN_CLUSTER_BITS <= cluster_bits <= hdr.MAX_CLUSTER_BITS
    ):
        raise ImageError(
            f"cluster size {cluster_size} is invalid: use a power of two from 512 to 2M"
        )
    if version not in (2, 3):
        raise ImageError(f"qcow2 version {version} is invalid: use compat=0.10 (2) or 1.1 (3)")
    if refcount_bits not in REFCOUNT_BITS:
        raise ImageError(f"refcount_bits {refcount_bits} is invalid: use a power of two up to 64")
    if version == 2 and refcount_bits != 16:
        raise ImageError("version 2 (compat=0.10) images need refcount_bits=16")
    if version == 2 and lazy_refcounts:
        raise ImageError("lazy_refcounts needs version 3 (compat=1.1)")
    ctype = {"zlib": hdr.COMPRESSION_ZLIB, "zstd": hdr.COMPRESSION_ZSTD}.get(compression_type)
    if ctype is None:
        raise ImageError(f"compression_type {compression_type!r} is invalid: use zlib or zstd")
    if ctype != hdr.COMPRESSION_ZLIB and version == 2:
        raise ImageError("compression_type=zstd needs version 3 (compat=1.1)")
    if size < 0 or size > hdr.MAX_VIRTUAL_SIZE:
        raise ImageError(f"size {size} is invalid")
    size = -(-size // 512) * 512  # qemu-img rounds up to whole sectors too
    cs = cluster_size
    l1_size = -(-size // (cs * (cs // 8)))
    if l1_size * 8 > hdr.MAX_L1_BYTES:
        raise ImageError("image too large for this cluster size; use a larger cluster_size")
    l1_clusters = -(-l1_size * 8 // cs)  # 0 for an empty disk: the L1 table is empty
    h = hdr.Header(
        version=version,
        backing_file_offset=0,
        backing_file_size=0,
        cluster_bits=cluster_bits,
        size=size,
        crypt_method=0,
        l1_size=l1_size,
        l1_table_offset=cs,
        refcount_table_offset=cs * (1 + l1_clusters),
        refcount_table_clusters=1,
        nb_snapshots=0,
        snapshots_offset=0,
        incompatible_features=hdr.INCOMPAT_COMPRESSION if ctype else 0,
        compatible_features=hdr.COMPAT_LAZY_REFCOUNTS if lazy_refcounts else 0,
        refcount_order=refcount_bits.bit_length() - 1,
        header_length=hdr.HEADER_LEN_WITH_COMPRESSION if version >= 3 else hdr.V2_HEADER_LEN,
        compression_type=ctype,
        backing_file=backing_file,
    )
    h.set_backing_format(backing_format if backing_file else None)
    head = h.pack()
    nmeta = 2 + l1_clusters
    fd = create_locked(path)
    try:
        os.pwrite(fd, head + bytes(cs * nmeta - len(head)), 0)
        f = HostFile(fd, path)

        def set_table(offset: int, clusters: int) -> None:
            h.refcount_table_offset, h.refcount_table_clusters = offset, clusters

        rc = Refcounts(
            f, cluster_bits, h.refcount_order, h.refcount_table_offset, 1, set_table, lambda: None
        )
        rc.floor = nmeta
        for c in range(nmeta):
            rc.update(c, 1)
        os.pwrite(fd, h.pack(), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)  # no half-written image left behind
        raise
    os.close(fd)

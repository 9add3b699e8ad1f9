"""Compressed clusters (qcow2.txt, "Compressed Clusters Descriptor" and the
``compression_type`` header field).

zlib clusters are raw deflate streams (no zlib header, window 2^12 as QEMU
writes them; any window up to 2^15 decodes). zstd clusters are one zstd frame;
they are supported where the ``zstandard`` module is installed. A cluster that
does not decompress to exactly one cluster of data is reported as damaged.
"""

from __future__ import annotations

import zlib

from kvmlite.backends.block.qcow2.header import COMPRESSION_ZLIB, COMPRESSION_ZSTD
from kvmlite.errors import ImageError

try:  # optional: zstd-compressed images
    import zstandard
except ImportError:  # pragma: no cover - depends on the environment
    zstandard = None  # type: ignore[assignment]


def zstd_available() -> bool:
    return zstandard is not None


def decompress(data: bytes, cluster_size: int, ctype: int, where: str) -> bytes:
    """Decompress one cluster; raise ImageError if the stream is bad or short."""
    try:
        if ctype == COMPRESSION_ZLIB:
            d = zlib.decompressobj(-15)
            out = d.decompress(data, cluster_size)
        elif ctype == COMPRESSION_ZSTD:
            if zstandard is None:
                raise ImageError(
                    f"{where}: zstd-compressed image; install the 'zstandard' Python module"
                )
            zd = zstandard.ZstdDecompressor().decompressobj()
            out = zd.decompress(data)[:cluster_size]
        else:
            raise ImageError(f"{where}: unknown compression type {ctype}")
    except (zlib.error, ValueError) as e:
        raise ImageError(f"{where}: compressed cluster is damaged ({e})") from None
    except Exception as e:  # zstandard.ZstdError is not exported uniformly
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"{where}: compressed cluster is damaged ({e})") from None
    if len(out) != cluster_size:
        raise ImageError(
            f"{where}: compressed cluster decodes to {len(out)} bytes, not {cluster_size}"
        )
    return out


def compress(data: bytes, ctype: int) -> bytes:
    """Compress one cluster the way QEMU stores it."""
    if ctype == COMPRESSION_ZLIB:
        c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12)
        return c.compress(data) + c.flush()
    if ctype == COMPRESSION_ZSTD:
        if zstandard is None:
            raise ImageError("zstd compression needs the 'zstandard' Python module")
        return zstandard.ZstdCompressor().compress(data)
    raise ImageError(f"unknown compression type {ctype}")

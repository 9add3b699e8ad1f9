"""Block backends: raw and qcow2 images behind one interface (base.BlockBackend).

``open_image`` picks the format the way QEMU does: a file that starts with the
qcow2 magic is qcow2, anything else raw. ``format=`` forces it. A file with the
qcow2 magic whose header is not valid is refused rather than guessed to be raw
(a guest could otherwise have written that "header"); pass ``format=raw`` to
use it as raw.
"""

from __future__ import annotations

import os

from kvmlite.backends.block.base import BlockBackend, Extent
from kvmlite.backends.block.raw import QCOW2_MAGIC, RawBackend
from kvmlite.errors import ImageError

FORMATS = ("raw", "qcow2")


def probe_format(path: str) -> str:
    """'qcow2' if the file starts with the qcow2 magic, else 'raw'."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError:
        raise ImageError(f"{path}: disk image not found; check the path") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not a disk image") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read: {e.strerror}") from None
    return "qcow2" if magic == QCOW2_MAGIC else "raw"


def open_image(
    path: str,
    format: str | None = None,
    read_only: bool = False,
    direct: bool = False,
    *,
    locking: bool = True,
    force_share: bool = False,
    _chain: tuple[str, ...] = (),
) -> BlockBackend:
    """Open a disk image as a BlockBackend, probing its format unless ``format`` is given.

    The image (and a qcow2 image's backing files) is locked as QEMU locks it
    unless ``locking=False``; ``force_share`` reads an image others may write
    (read-only only). See kvmlite/backends/block/locking.py.
    """
    from kvmlite.backends.block.qcow2 import Qcow2Backend  # noqa: PLC0415 - import cycle

    path = os.fspath(path)
    if format is not None and format not in FORMATS:
        raise ImageError(f"unknown image format {format!r}; use one of: {', '.join(FORMATS)}")
    probed = probe_format(path)
    fmt = format or probed
    if fmt == "raw":
        return RawBackend(
            path,
            read_only=read_only,
            direct=direct,
            probed=format is None,
            locking=locking,
            force_share=force_share,
        )
    if probed != "qcow2":
        raise ImageError(f"{path}: not a qcow2 image (no qcow2 magic); use format=raw")
    if direct:
        raise ImageError(f"{path}: direct=on (O_DIRECT) is only supported for raw images")
    if format is None:
        _refuse_fake_qcow2(path)
    return Qcow2Backend(
        path, read_only=read_only, locking=locking, force_share=force_share, _chain=_chain
    )


def _refuse_fake_qcow2(path: str) -> None:
    """A probed file with the qcow2 magic must have a valid header to be used as qcow2."""
    from kvmlite.backends.block.qcow2.header import MAX_CLUSTER_BITS, parse_header

    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << MAX_CLUSTER_BITS)
            size = os.fstat(fh.fileno()).st_size
        parse_header(head, size, path)
    except ImageError as e:
        raise ImageError(
            f"{e}\n{path} starts with the qcow2 magic but is not a valid qcow2 image; "
            "if it really is a raw disk, open it with format=raw"
        ) from None


__all__ = ["BlockBackend", "Extent", "RawBackend", "open_image", "probe_format"]

"""The operations behind ``kvmlite img`` (create, info, convert, commit, rebase, resize).

They mirror qemu-img's semantics (QEMU docs/tools/qemu-img.rst) on top of the
BlockBackend interface; the command line lives in kvmlite/imgtool.py. Each
takes an optional ``progress(nbytes)`` callback for the progress bar.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from kvmlite.backends.block import open_image, probe_format
from kvmlite.backends.block.base import BlockBackend, Extent
from kvmlite.backends.block.locking import create_locked
from kvmlite.backends.block.qcow2 import Qcow2Backend, create_qcow2
from kvmlite.backends.block.qcow2.header import COMPRESSION_NAMES, INCOMPAT_CORRUPT, INCOMPAT_DIRTY
from kvmlite.backends.block.qcow2.image import backing_path
from kvmlite.backends.block.raw import RawBackend
from kvmlite.errors import ConfigError, ImageError

Progress = Callable[[int], None]
CHUNK = 1 << 20


def _noop(_n: int) -> None:
    pass


def parse_options(text: str | None) -> dict[str, str]:
    """'-o cluster_size=4k,compat=v2' -> {'cluster_size': '4k', 'compat': 'v2'}."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part:
            continue
        key, sep, value = part.partition("=")
        out[key.strip()] = value.strip() if sep else "on"
    return out


def _bool(value: str, key: str) -> bool:
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise ConfigError(f"option {key}={value!r}: use on or off")


def create_image(
    path: str,
    fmt: str,
    size: int | None,
    options: dict[str, str],
    backing: str | None = None,
    backing_fmt: str | None = None,
    check_backing: bool = True,
) -> None:
    """``qemu-img create``: a raw or qcow2 image, optionally over a backing file."""
    from kvmlite.backends.block.sizes import parse_size

    opts = dict(options)
    backing = opts.pop("backing_file", backing)
    backing_fmt = opts.pop("backing_fmt", backing_fmt)
    if "size" in opts:
        size = parse_size(opts.pop("size"))
    if backing and (check_backing or size is None):
        bpath = backing_path(path, backing)
        with open_image(bpath, backing_fmt, read_only=True) as b:
            backing_fmt = backing_fmt or b.format_name
            if size is None:
                size = b.size
    if size is None:
        raise ConfigError("give the image size (or a backing file to take it from)")
    if fmt == "raw":
        if backing or opts.keys() - {"preallocation"}:
            raise ConfigError(f"raw images take no options: {', '.join(opts) or 'backing file'}")
        fd = create_locked(path)
        try:
            os.ftruncate(fd, size)
        except OSError as e:
            raise ImageError(f"{path}: cannot create: {e.strerror}") from None
        finally:
            os.close(fd)
        return
    if fmt != "qcow2":
        raise ConfigError(f"unknown format {fmt!r}; use raw or qcow2")
    kw: dict[str, Any] = {}
    from kvmlite.backends.block.sizes import parse_size as ps

    for key, value in opts.items():
        if key == "cluster_size":
            kw["cluster_size"] = ps(value)
        elif key == "compat":
            if value not in ("0.10", "v2", "1.1", "v3"):
                raise ConfigError(f"compat={value!r}: use 0.10 (v2) or 1.1 (v3)")
            kw["version"] = 2 if value in ("0.10", "v2") else 3
        elif key == "refcount_bits":
            kw["refcount_bits"] = int(value)
        elif key == "lazy_refcounts":
            kw["lazy_refcounts"] = _bool(value, key)
        elif key == "compression_type":
            kw["compression_type"] = value
        elif key == "preallocation" and value == "off":
            pass
        else:
            raise ConfigError(f"unsupported qcow2 option {key}={value}")
    create_qcow2(path, size, backing_file=backing, backing_format=backing_fmt, **kw)


def open_for_tool(path: str, fmt: str | None, read_only: bool = True) -> BlockBackend:
    return open_image(path, fmt, read_only=read_only)


def image_info(path: str, fmt: str | None) -> dict[str, Any]:
    """The fields of ``qemu-img info --output=json``."""
    fmt = fmt or probe_format(path)
    st = os.stat(path)
    info: dict[str, Any] = {"filename": path, "format": fmt, "actual-size": st.st_blocks * 512}
    if fmt == "raw":
        with RawBackend(path, read_only=True) as r:
            info["virtual-size"] = r.size
        info["dirty-flag"] = False
        return info
    with Qcow2Backend(path, read_only=True, open_backing=False) as q:
        h = q.header
        info["virtual-size"] = h.size
        info["cluster-size"] = q.cs
        info["dirty-flag"] = bool(h.incompatible_features & INCOMPAT_DIRTY)
        if h.backing_file:
            info["backing-filename"] = h.backing_file
            info["full-backing-filename"] = backing_path(path, h.backing_file)
            if h.backing_format:
                info["backing-filename-format"] = h.backing_format
        data: dict[str, Any] = {"compat": "0.10" if h.version == 2 else "1.1"}
        if h.version >= 3:
            data["compression-type"] = COMPRESSION_NAMES[h.compression_type]
            data["lazy-refcounts"] = bool(h.compatible_features & 1)
        data["refcount-bits"] = 1 << h.refcount_order
        data["corrupt"] = bool(h.incompatible_features & INCOMPAT_CORRUPT)
        data["extended-l2"] = False
        info["format-specific"] = {"type": "qcow2", "data": data}
        if q.snapshots:
            info["snapshots"] = [
                {
                    "id": s.id,
                    "name": s.name,
                    "vm-state-size": s.vm_state_size,
                    "date-sec": s.date_sec,
                    "date-nsec": s.date_nsec,
                    "vm-clock-sec": s.vm_clock_nsec // 10**9,
                    "vm-clock-nsec": s.vm_clock_nsec % 10**9,
                    **({"icount": s.icount} if s.icount is not None else {}),
                }
                for s in q.snapshots
            ]
    return info


def map_image(path: str, fmt: str | None) -> list[Extent]:
    """The allocation map of the whole image (through its backing chain)."""
    with open_image(path, fmt, read_only=True) as img:
        return list(img.extents())


def extent_json(e: Extent) -> dict[str, Any]:
    """One extent as ``qemu-img map --output=json`` prints it."""
    d: dict[str, Any] = {
        "start": e.offset,
        "length": e.length,
        "depth": e.depth,
        "present": e.filename is not None,
        "zero": e.zero,
        "data": e.data,
    }
    if e.host_offset is not None:
        d["offset"] = e.host_offset
    return d


def _is_zero(buf: bytes | bytearray | memoryview) -> bool:
    mv = memoryview(buf)
    return not any(mv) if len(mv) < 64 else mv.tobytes() == bytes(len(mv))


def convert(
    src_path: str,
    dst_path: str,
    src_fmt: str | None,
    dst_fmt: str,
    options: dict[str, str],
    compress: bool = False,
    backing: str | None = None,
    backing_fmt: str | None = None,
    progress: Progress = _noop,
) -> None:
    """``qemu-img convert``: copy the guest-visible content, skipping zeros."""
    with open_image(src_path, src_fmt, read_only=True) as src:
        if compress and dst_fmt != "qcow2":
            raise ConfigError("compression (-c) needs -O qcow2")
        create_image(dst_path, dst_fmt, src.size, options, backing, backing_fmt)
        try:
            dst: BlockBackend = (
                Qcow2Backend(dst_path) if dst_fmt == "qcow2" else RawBackend(dst_path)
            )
            try:
                _copy(src, dst, compress, progress)
                dst.flush()
            finally:
                dst.close()
        except BaseException:
            os.unlink(dst_path)  # leave nothing half-converted behind (DESIGN rule 7)
            raise


def _copy(src: BlockBackend, dst: BlockBackend, compress: bool, progress: Progress) -> None:
    step = dst.cs if isinstance(dst, Qcow2Backend) and compress else CHUNK
    base = dst.backing if isinstance(dst, Qcow2Backend) else None
    for ext in list(src.extents()):
        if ext.zero and not ext.data and base is None:
            progress(ext.length)
            continue
        pos, end = ext.offset, ext.offset + ext.length
        while pos < end:
            n = min(step - pos % step, end - pos)
            buf = src.read(pos, n)
            if base is not None:
                inside = max(0, min(n, base.size - pos))
                old = base.read(pos, inside) + bytes(n - inside)
                if old != buf:
                    dst.write(pos, buf)
            elif not _is_zero(buf):
                if compress and isinstance(dst, Qcow2Backend) and n == min(step, dst.size - pos):
                    dst.write_compressed(pos, buf)
                else:
                    dst.write(pos, buf)
            pos += n
            progress(n)


def _backing_of(path: str) -> tuple[str, str | None]:
    with Qcow2Backend(path, read_only=True, open_backing=False) as q:
        if not q.header.backing_file:
            raise ImageError(f"{path}: image has no backing file")
        return backing_path(path, q.header.backing_file), q.header.backing_format


def commit(path: str, fmt: str | None, keep: bool = False, progress: Progress = _noop) -> None:
    """``qemu-img commit``: write the top image's clusters into its backing file."""
    if (fmt or probe_format(path)) != "qcow2":
        raise ImageError(f"{path}: only qcow2 images have a backing file to commit into")
    bpath, bfmt = _backing_of(path)
    # The base first, read-write, and the top without its backing (a second,
    # read-only open of the base, which the write lock would refuse).
    with (
        open_image(bpath, bfmt) as base,
        Qcow2Backend(path, read_only=True, open_backing=False) as top,
    ):
        for e in list(top.extents()):
            if e.depth == 0 and e.filename is not None:
                _commit_extent(top, base, e.offset, e.length)
            progress(e.length)
        base.flush()
    if not keep:
        with Qcow2Backend(path) as top:
            top.deallocate(0, top.size)


def _commit_extent(top: BlockBackend, base: BlockBackend, offset: int, length: int) -> None:
    end = min(offset + length, base.size)
    pos = offset
    while pos < end:
        n = min(CHUNK, end - pos)
        buf = top.read(pos, n)
        if _is_zero(buf):
            base.write_zeroes(pos, n)
        else:
            base.write(pos, buf)
        pos += n


def rebase(
    path: str,
    new_backing: str,
    new_fmt: str | None,
    unsafe: bool = False,
    progress: Progress = _noop,
) -> None:
    """``qemu-img rebase``: change the backing file, keeping the content (unless -u)."""
    if probe_format(path) != "qcow2":
        raise ImageError(f"{path}: only qcow2 images have a backing file")
    if new_backing and new_fmt is None and not unsafe:
        new_fmt = probe_format(backing_path(path, new_backing))
    if unsafe:
        with Qcow2Backend(path, open_backing=False) as top:
            top.set_backing(new_backing or None, new_fmt)
        return
    with Qcow2Backend(path) as top:
        new = open_image(backing_path(path, new_backing), new_fmt, True) if new_backing else None
        try:
            cs = top.cs
            for e in list(top.extents()):
                if e.depth == 0 and e.filename is not None:
                    progress(e.length)
                    continue
                pos, end = e.offset, e.offset + e.length
                while pos < end:
                    n = min(cs - pos % cs, end - pos)
                    old = top.read(pos, n)
                    inside = 0 if new is None else max(0, min(n, new.size - pos))
                    cur = (new.read(pos, inside) if new is not None and inside else b"") + bytes(
                        n - inside
                    )
                    if old != cur:
                        top.write(pos, old)
                    pos += n
                    progress(n)
        finally:
            if new is not None:
                new.close()
        top.flush()
        top.set_backing(new_backing or None, new_fmt)


def resize(path: str, fmt: str | None, size_spec: str, shrink: bool) -> int:
    """``qemu-img resize``: absolute or +/- relative size; returns the new size."""
    from kvmlite.backends.block.sizes import parse_size

    fmt = fmt or probe_format(path)
    img: RawBackend | Qcow2Backend = RawBackend(path) if fmt == "raw" else Qcow2Backend(path)
    with img:
        if size_spec.startswith("+"):
            new = img.size + parse_size(size_spec[1:])
        elif size_spec.startswith("-"):
            new = img.size - parse_size(size_spec[1:])
        else:
            new = parse_size(size_spec)
        if new < 0:
            raise ConfigError("the new size would be negative")
        if new < img.size and not shrink:
            raise ConfigError(
                "shrinking loses the data past the new end; pass --shrink if that is intended"
            )
        if isinstance(img, RawBackend):
            img.truncate(new)
        else:
            img.resize(new)
    return new


def repair_image(path: str, what: str) -> tuple[Any, Any]:
    """``check -r leaks|all``: (result before repair, result after)."""
    from kvmlite.backends.block.qcow2.check import check, repair

    with Qcow2Backend(path, open_backing=False, repairing=True) as q:
        fixed = repair(q, leaks=True, errors=what == "all")
        if what == "all":
            q.clear_flags(INCOMPAT_CORRUPT | INCOMPAT_DIRTY)
    with Qcow2Backend(path, read_only=True, open_backing=False) as q:
        after = check(q)
    return fixed, after


def compare(
    a_path: str, b_path: str, a_fmt: str | None, b_fmt: str | None, strict: bool = False
) -> int | None:
    """``qemu-img compare``: None if the guest-visible contents match, else the first
    differing offset. Without ``strict`` a size difference is fine when the extra
    part of the larger image reads as zeros."""
    with open_image(a_path, a_fmt, read_only=True) as a, open_image(b_path, b_fmt, True) as b:
        if strict and a.size != b.size:
            return min(a.size, b.size)
        common = min(a.size, b.size)
        pos = 0
        while pos < common:
            n = min(CHUNK, common - pos)
            x, y = a.read(pos, n), b.read(pos, n)
            if x != y:
                return pos + next(i for i in range(n) if x[i] != y[i])
            pos += n
        longer = a if a.size > b.size else b
        while pos < longer.size:
            n = min(CHUNK, longer.size - pos)
            x = longer.read(pos, n)
            if not _is_zero(x):
                return pos + next(i for i in range(n) if x[i])
            pos += n
    return None

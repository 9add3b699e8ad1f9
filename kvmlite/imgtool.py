"""``kvmlite img``: create, inspect, check, convert and rework disk images.

A small qemu-img (QEMU docs/tools/qemu-img.rst) for raw and qcow2, with the
same sub-commands, options, ``--output=json`` shapes and check exit codes
(0 clean, 1 check not completed, 2 corruptions, 3 leaks only;
compare: 0 identical, 1 different, 2 error). Runs as
``kvmlite img ...`` (``register``) or ``python -m kvmlite.imgtool ...``.
The work itself lives in kvmlite/backends/block/imgops.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kvmlite.backends.block import imgops
from kvmlite.backends.block.locking import force_share_reads
from kvmlite.backends.block.qcow2.image import MAX_CHAIN
from kvmlite.backends.block.sizes import human, parse_size
from kvmlite.errors import ImageError, KvmliteError

FORMATS = ("raw", "qcow2")


@contextmanager
def _progress(enabled: bool, total: int, desc: str) -> Iterator[Callable[[int], None]]:
    """A tqdm bar like qemu-img -p; a no-op callback when disabled."""
    if not enabled:
        yield lambda _n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        yield advance


def _size_of(path: str, fmt: str | None) -> int:
    with imgops.open_for_tool(path, fmt) as img:
        return img.size


def cmd_create(a: argparse.Namespace) -> int:
    size = parse_size(a.size) if a.size else None
    imgops.create_image(
        a.filename,
        a.format,
        size,
        imgops.parse_options(a.options),
        a.backing,
        a.backing_format,
        check_backing=not a.unsafe,
    )
    if not a.quiet:
        shown = f", size={size}" if size is not None else ""
        print(f"Formatting '{a.filename}', fmt={a.format}{shown}")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    chain = []
    path, fmt = a.filename, a.format
    seen = [os.path.realpath(path)]
    while True:
        info = imgops.image_info(path, fmt)
        chain.append(info)
        if not a.backing_chain or "full-backing-filename" not in info:
            break
        named_by = path
        path, fmt = info["full-backing-filename"], info.get("backing-filename-format")
        if os.path.realpath(path) in seen:  # as open_image refuses it (qcow2/image.py)
            raise ImageError(
                f"{named_by}: backing chain loops back to {path}; fix it with "
                "'kvmlite img rebase -u -b <file>'"
            )
        if len(seen) >= MAX_CHAIN:
            raise ImageError(f"{a.filename}: backing chain is deeper than {MAX_CHAIN} images")
        seen.append(os.path.realpath(path))
    if a.output == "json":
        print(json.dumps(chain if a.backing_chain else chain[0], indent=4))
        return 0
    for i, info in enumerate(chain):
        if i:
            print()
        _print_info(info)
    return 0


def _print_info(info: dict[str, Any]) -> None:
    print(f"image: {info['filename']}")
    print(f"file format: {info['format']}")
    print(f"virtual size: {human(info['virtual-size'])} ({info['virtual-size']} bytes)")
    print(f"disk size: {human(info['actual-size'])}")
    if "cluster-size" in info:
        print(f"cluster_size: {info['cluster-size']}")
    if "backing-filename" in info:
        print(f"backing file: {info['backing-filename']}")
        if "backing-filename-format" in info:
            print(f"backing file format: {info['backing-filename-format']}")
    if info.get("snapshots"):
        print("Snapshot list:")
        print(f"{'ID':<4} {'TAG':<16} {'VM SIZE':>8} {'DATE':<19} {'VM CLOCK':<15}")
        for s in info["snapshots"]:
            print(
                f"{s['id']:<4} {s['name']:<16} {human(s['vm-state-size']):>8} "
                f"{s['date-sec']:<19} {s['vm-clock-sec']}.{s['vm-clock-nsec']:09d}"
            )
    spec = info.get("format-specific")
    if spec:
        print("Format specific information:")
        for k, v in spec["data"].items():
            shown = str(v).lower() if isinstance(v, bool) else v
            print(f"    {k.replace('-', ' ')}: {shown}")


def cmd_check(a: argparse.Namespace) -> int:
    from kvmlite.backends.block.checkreport import check_image

    result = check_image(a.filename, a.format, a.repair)
    if a.output == "json":
        print(json.dumps(result.as_json(), indent=4))
    else:
        for line in result.lines():
            print(line)
    return result.exit_code()


def cmd_convert(a: argparse.Namespace) -> int:
    total = _size_of(a.source, a.format)
    with _progress(a.progress, total, "convert") as bar:
        imgops.convert(
            a.source,
            a.dest,
            a.format,
            a.output_format,
            imgops.parse_options(a.options),
            compress=a.compress,
            backing=a.backing,
            backing_fmt=a.backing_format,
            progress=bar,
        )
    return 0


def _hex(n: int) -> str:
    return f"{n:#x}" if n else "0"  # printf's %#llx prints a bare 0


def cmd_map(a: argparse.Namespace) -> int:
    extents = imgops.map_image(a.filename, a.format)
    if a.output == "json":
        print(json.dumps([imgops.extent_json(e) for e in extents], indent=4))
        return 0
    print(f"{'Offset':<16}{'Length':<16}{'Mapped to':<16}File")
    for e in extents:
        if e.data and e.host_offset is not None:
            print(f"{_hex(e.offset):<16}{_hex(e.length):<16}{_hex(e.host_offset):<16}{e.filename}")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    at = imgops.compare(a.image1, a.image2, a.format, a.format2, strict=a.strict)
    if at is None:
        if not a.quiet:
            print("Images are identical.")
        return 0
    if not a.quiet:
        print(f"Content mismatch at offset {at}!")
    return 1


def cmd_resize(a: argparse.Namespace) -> int:
    imgops.resize(a.filename, a.format, a.size, a.shrink)
    if not a.quiet:
        print("Image resized.")
    return 0


def cmd_commit(a: argparse.Namespace) -> int:
    total = _size_of(a.filename, a.format)
    with _progress(a.progress, total, "commit") as bar:
        imgops.commit(a.filename, a.format, keep=a.keep, progress=bar)
    if not a.quiet:
        print("Image committed.")
    return 0


def cmd_rebase(a: argparse.Namespace) -> int:
    total = _size_of(a.filename, a.format)
    with _progress(a.progress and not a.unsafe, total, "rebase") as bar:
        imgops.rebase(a.filename, a.backing, a.backing_format, unsafe=a.unsafe, progress=bar)
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", dest="format", choices=FORMATS, help="image format (default: probe)")
    p.add_argument("-q", dest="quiet", action="store_true", help="quiet")


def _add_force_share(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-U",
        "--force-share",
        dest="force_share",
        action="store_true",
        help="open read-only images without refusing a writer (the result may be inconsistent)",
    )


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``img`` and its sub-commands to an argparse subparsers object."""
    img = subparsers.add_parser("img", help="create, inspect and convert disk images")
    sub = img.add_subparsers(dest="img_command", metavar="COMMAND", required=True)

    p = sub.add_parser("create", help="create a new image")
    p.add_argument("-f", dest="format", choices=FORMATS, default="raw")
    p.add_argument("-o", dest="options", help="options, e.g. cluster_size=64k,compat=1.1")
    p.add_argument("-b", dest="backing", help="backing file")
    p.add_argument("-F", dest="backing_format", choices=FORMATS, help="backing file format")
    p.add_argument("-u", dest="unsafe", action="store_true", help="do not open the backing file")
    p.add_argument("-q", dest="quiet", action="store_true")
    p.add_argument("filename")
    p.add_argument("size", nargs="?")
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("info", help="show image information")
    _add_common(p)
    _add_force_share(p)
    p.add_argument("--output", choices=("human", "json"), default="human")
    p.add_argument("--backing-chain", action="store_true")
    p.add_argument("filename")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("check", help="check (and repair) an image's metadata")
    _add_common(p)
    _add_force_share(p)
    p.add_argument("-r", dest="repair", choices=("leaks", "all"))
    p.add_argument("--output", choices=("human", "json"), default="human")
    p.add_argument("filename")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("convert", help="copy an image to another format")
    _add_common(p)
    _add_force_share(p)
    p.add_argument("-O", dest="output_format", choices=FORMATS, default="raw")
    p.add_argument("-o", dest="options")
    p.add_argument("-c", dest="compress", action="store_true", help="compress (qcow2)")
    p.add_argument("-p", dest="progress", action="store_true", help="show progress")
    p.add_argument("-B", dest="backing", help="backing file of the output")
    p.add_argument("-F", dest="backing_format", choices=FORMATS)
    p.add_argument("source")
    p.add_argument("dest")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("compare", help="compare the contents of two images")
    _add_common(p)
    _add_force_share(p)
    p.add_argument("-F", dest="format2", choices=FORMATS, help="format of the second image")
    p.add_argument("-s", dest="strict", action="store_true", help="sizes must match too")
    p.add_argument("image1")
    p.add_argument("image2")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("map", help="show where the image's data lives")
    _add_common(p)
    _add_force_share(p)
    p.add_argument("--output", choices=("human", "json"), default="human")
    p.add_argument("filename")
    p.set_defaults(func=cmd_map)

    p = sub.add_parser("resize", help="change the virtual size")
    _add_common(p)
    p.add_argument("--shrink", action="store_true", help="allow making the image smaller")
    p.add_argument("filename")
    p.add_argument("size", help="new size, or +SIZE / -SIZE")
    p.set_defaults(func=cmd_resize)

    p = sub.add_parser("commit", help="write an overlay's changes into its backing file")
    _add_common(p)
    p.add_argument("-d", dest="keep", action="store_true", help="keep the overlay's content")
    p.add_argument("-p", dest="progress", action="store_true")
    p.add_argument("filename")
    p.set_defaults(func=cmd_commit)

    p = sub.add_parser("rebase", help="change an overlay's backing file")
    _add_common(p)
    p.add_argument("-b", dest="backing", required=True, help="new backing file ('' for none)")
    p.add_argument("-F", dest="backing_format", choices=FORMATS)
    p.add_argument("-u", dest="unsafe", action="store_true", help="only rewrite the header")
    p.add_argument("-p", dest="progress", action="store_true")
    p.add_argument("filename")
    p.set_defaults(func=cmd_rebase)
    return img


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``img`` command; errors become a message and exit status 1."""
    try:
        with force_share_reads(getattr(args, "force_share", False)):
            return int(args.func(args))
    except BrokenPipeError:  # output piped into head & co.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
        return 0
    except KvmliteError as e:
        print(f"kvmlite img: {e}", file=sys.stderr)
        # qemu-img compare reports errors as 2 (1 means "different")
        return 2 if getattr(args, "img_command", None) == "compare" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvmlite")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["img", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

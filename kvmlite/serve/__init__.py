"""``kvmlite serve``: a vhost-user back-end for one kvmlite device model.

Serves ``kvmlite.devices.virtio`` models to QEMU or any other vhost-user
front-end (QEMU docs/interop/vhost-user.rst) through
``kvmlite.vhost_user.backend.VhostUserBackend``::

    kvmlite serve blk --socket /tmp/blk.sock [--queue-size N] disk.qcow2[,ro][,serial=S][,aio=E]
    kvmlite serve rng --socket /tmp/rng.sock
    kvmlite serve net --socket /tmp/net.sock [--queue-size N] user|tap[,...]|socket,listen=P
    kvmlite serve console --socket /tmp/con.sock [stdio|file:P|unix:P|pty|null]
    kvmlite serve scsi --socket /tmp/scsi.sock [--cdrom ISO|DIR|''] [DISK...]

The process serves front-ends one after another (a front-end that quits or
dies is replaced by the next one to connect) until SIGINT or SIGTERM.
Runs as ``kvmlite serve ...`` (``register``/``run``) or
``python -m kvmlite.serve ...``.  net and console live in their own
modules (kvmlite/serve/net.py, console.py, scsi.py).  See docs/vhost-user.md.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from kvmlite.errors import KvmliteError

log = logging.getLogger("kvmlite.serve")


#: QEMU's vhost-user-blk-pci "queue-size" default. virtio-blk's SEG_MAX
#: (queue size - 2) tells the driver how long a request's chain may be, so
#: the device's queue size must match the ring the front-end really sets up.
QEMU_VHOST_USER_BLK_QUEUE_SIZE = 128


def _queue_size(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 2 <= n <= 32768 or n & (n - 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not a power of two in 2..32768")
    return n


def serve_device(
    device: Any,
    socket_path: str,
    watch: Sequence[tuple[int, Callable[[], object]]] = (),
    *,
    wire: Callable[[Any], object] | None = None,
) -> int:
    """Serve ``device`` until SIGINT/SIGTERM; ``wire(server)`` adds its backends' fds."""
    from kvmlite.vhost_user.backend import VhostUserBackend  # noqa: PLC0415 - start-up time

    backend = VhostUserBackend(device, socket_path, watch=watch)
    if wire is not None:
        wire(backend)
    old = {s: signal.signal(s, lambda *_: backend.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    print(f"kvmlite serve: {device.name} on {socket_path}", file=sys.stderr, flush=True)
    try:
        backend.serve_forever()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        backend.close()
    return 0


def cmd_blk(a: argparse.Namespace) -> int:
    from kvmlite.backends.block import open_image  # noqa: PLC0415
    from kvmlite.backends.block.engines import open_engine  # noqa: PLC0415
    from kvmlite.config import DriveConfig  # noqa: PLC0415
    from kvmlite.devices.virtio import VirtioBlock  # noqa: PLC0415

    disk = DriveConfig.parse(a.image)
    fmt = disk.format.value if disk.format else None
    image = open_image(
        str(disk.path),
        fmt,
        disk.read_only,
        disk.direct,
        locking=disk.locking,
        force_share=disk.force_share,
    )
    try:
        aio = disk.aio.value if disk.aio else None
        executor = open_engine(aio, what=str(disk.path), direct=disk.direct)
    except BaseException:
        image.close()
        raise
    try:
        dev = VirtioBlock(
            image,
            serial=disk.serial or "",
            num_queues=disk.queues,
            queue_size=a.queue_size,
            executor=executor,
        )
        assert executor.completion_fd is not None
        return serve_device(dev, a.socket, [(executor.completion_fd, executor.run_completions)])
    finally:
        executor.close()
        image.close()


def cmd_rng(a: argparse.Namespace) -> int:
    from kvmlite.devices.virtio import VirtioRng  # noqa: PLC0415

    return serve_device(VirtioRng(), a.socket)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` and its device sub-commands to an argparse subparsers object."""
    serve = subparsers.add_parser("serve", help="serve a virtio device over vhost-user")
    sub = serve.add_subparsers(dest="serve_device", metavar="DEVICE", required=True)

    p = sub.add_parser("blk", help="virtio-blk over a raw or qcow2 image")
    p.add_argument("--socket", required=True, help="unix socket path to listen on")
    p.add_argument(
        "image",
        metavar="IMAGE[,ro][,direct][,serial=S][,format=F][,queues=N][,locking=off]"
        "[,force-share][,aio=E]",
        help="disk image and options (as kvmlite run -d)",
    )
    p.add_argument(
        "--queue-size",
        type=_queue_size,
        default=QEMU_VHOST_USER_BLK_QUEUE_SIZE,
        metavar="N",
        help="ring entries per queue; must equal the front-end's (QEMU queue-size=, "
        f"default {QEMU_VHOST_USER_BLK_QUEUE_SIZE})",
    )
    p.set_defaults(func=cmd_blk)

    p = sub.add_parser("rng", help="virtio-rng (entropy from the host's os.urandom)")
    p.add_argument("--socket", required=True, help="unix socket path to listen on")
    p.set_defaults(func=cmd_rng)

    from kvmlite.serve import console, net, scsi  # noqa: PLC0415 - cheap: they import lazily

    net.add_parser(sub, _queue_size)
    console.add_parser(sub)
    scsi.add_parser(sub, _queue_size)

    for name in ("blk", "rng", "net", "console", "scsi"):
        sub.choices[name].add_argument(
            "-v", "--verbose", action="count", default=0, help="log more (-vv: debug)"
        )
    return serve


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``serve`` command; host errors become a message and exit status 1."""
    try:
        return int(args.func(args))
    except KvmliteError as e:
        print(f"kvmlite serve: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """``python -m kvmlite.serve DEVICE ...`` (the arguments of ``kvmlite serve``)."""
    parser = argparse.ArgumentParser(prog="kvmlite")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    verbose = getattr(args, "verbose", 0)
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
        format="kvmlite: %(message)s",
    )
    return run(args)

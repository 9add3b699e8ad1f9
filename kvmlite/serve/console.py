"""``kvmlite serve console``: virtio-console (virtio 1.2 §5.3) over vhost-user.

Port 0 (hvc0 in a Linux guest) is connected to a console backend from
``kvmlite.backends.char.parse_console_spec``: ``stdio``, ``file:PATH``,
``unix:PATH`` (a server; a client such as ``socat - UNIX-CONNECT:PATH`` types
into the guest), ``pty`` or ``null``. QEMU 7.2 has no vhost-user console
front-end (there is no ``vhost-user-console-pci``); any front-end that sets
up a virtio-console's rings over vhost-user can use it.
"""

from __future__ import annotations

import argparse
from typing import Any


def cmd_console(a: argparse.Namespace) -> int:
    from kvmlite.backends.char import parse_console_spec  # noqa: PLC0415 - start-up time
    from kvmlite.devices.virtio.console import VirtioConsole  # noqa: PLC0415
    from kvmlite.serve import serve_device  # noqa: PLC0415
    from kvmlite.vhost_user.wiring import wire_console  # noqa: PLC0415

    servers: list[Any] = []

    # stdio on a terminal is raw (Ctrl-C goes to the guest): Ctrl-A x stops serving.
    def stop_serving() -> None:
        for server in servers:
            server.stop()

    backend = parse_console_spec(a.backend, on_quit=stop_serving)
    try:
        dev = VirtioConsole(backend)

        def wire(server: Any) -> None:
            servers.append(server)
            wire_console(server, dev, backend)

        return serve_device(dev, a.socket, wire=wire)
    finally:
        backend.close()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("console", help="virtio-console (hvc0) over a console backend")
    p.add_argument("--socket", required=True, help="unix socket path to listen on")
    p.add_argument(
        "backend",
        nargs="?",
        default="stdio",
        metavar="BACKEND",
        help="stdio (default), file:PATH, unix:PATH, pty or null",
    )
    p.set_defaults(func=cmd_console)

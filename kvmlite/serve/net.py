"""``kvmlite serve net``: virtio-net over vhost-user (vhost-user.rst, QEMU ``-netdev vhost-user``).

The network backend comes from the same ``-n`` spec as ``kvmlite run``
(kvmlite/config/net.py): ``user[,hostfwd=...]`` (passt), ``tap[,...]``
or ``socket,listen=PATH`` / ``socket,connect=PATH``; one backend per queue
pair (``tap,queues=N``; QEMU then needs ``-netdev vhost-user,queues=N`` and
``-device virtio-net-pci,mq=on``).
"""

from __future__ import annotations

import argparse

from kvmlite.errors import ConfigError

#: The MAC the device reports when the spec has none. QEMU's virtio-net
#: answers the guest's config reads itself (with its own ``mac=``), so this
#: only matters to front-ends that read the back-end's config space.
DEFAULT_MAC = "52:54:00:12:34:56"


def cmd_net(a: argparse.Namespace) -> int:
    from kvmlite.backends.net.open import open_net  # noqa: PLC0415 - start-up time
    from kvmlite.config.net import NetConfig, NetKind  # noqa: PLC0415
    from kvmlite.devices.virtio import VirtioNet  # noqa: PLC0415
    from kvmlite.serve import serve_device  # noqa: PLC0415
    from kvmlite.vhost_user.wiring import wire_net  # noqa: PLC0415

    spec = NetConfig.parse(a.spec)
    if spec.kind is NetKind.NONE:
        raise ConfigError("kvmlite serve net needs a network: user, tap or socket (not none)")
    backends = open_net(spec, name="vhost-net")
    try:
        dev = VirtioNet(backends, mac=spec.mac or DEFAULT_MAC, queue_size=a.queue_size)
        return serve_device(dev, a.socket, wire=lambda server: wire_net(server, dev, backends))
    finally:
        for b in backends:
            b.close()


def add_parser(sub: argparse._SubParsersAction, queue_size: object) -> None:
    p = sub.add_parser("net", help="virtio-net over a passt, tap or socket network backend")
    p.add_argument("--socket", required=True, help="unix socket path to listen on")
    p.add_argument(
        "spec",
        metavar="SPEC",
        help="network backend, as kvmlite run -n: user[,hostfwd=...] | tap[,ifname=N][,queues=N]"
        " | socket,listen=PATH | socket,connect=PATH (mac=M: the device's address)",
    )
    p.add_argument(
        "--queue-size",
        type=queue_size,
        default=256,
        metavar="N",
        help="ring entries per queue (QEMU's virtio-net rx/tx_queue_size, default 256)",
    )
    p.set_defaults(func=cmd_net)

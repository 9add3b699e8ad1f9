"""Opening the host side of a network interface (the builder's one place for it)."""

from __future__ import annotations

from kvmlite.backends.net.base import NetBackend
from kvmlite.config.net import NetConfig, NetKind


def open_net(config: NetConfig, *, name: str = "net") -> list[NetBackend]:
    """Open the backend: one ``NetBackend`` per queue pair (empty for ``none``)."""
    if config.kind is NetKind.TAP:
        from kvmlite.backends.net.tap import TapBackend  # noqa: PLC0415

        return list(
            TapBackend.open(
                config.ifname,
                queues=config.queues,
                vnet_hdr=config.vnet_hdr,
                script=config.script,
                downscript=config.downscript,
            )
        )
    if config.kind is NetKind.USER:
        from kvmlite.backends.net.hostfwd import parse_hostfwd  # noqa: PLC0415
        from kvmlite.backends.net.passt import PasstBackend  # noqa: PLC0415

        fwds = [parse_hostfwd(h) for h in config.hostfwd]
        return [PasstBackend.start(fwds, name=f"{name}-user")]
    if config.kind is NetKind.SOCKET:
        from kvmlite.backends.net.socket_stream import StreamSocketBackend  # noqa: PLC0415

        if config.listen is not None:
            return [StreamSocketBackend.listen(config.listen, name=f"{name}-socket")]
        assert config.connect is not None
        return [StreamSocketBackend.connect(config.connect, name=f"{name}-socket")]
    return []

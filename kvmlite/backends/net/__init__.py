"""Network backends: the host side of virtio-net (see docs/networking.md).

The interface every backend has is in ``base``; ``socket_stream`` carries
frames over a unix stream socket (QEMU ``-netdev stream`` / passt framing).
"""

from kvmlite.backends.net.base import NetBackend
from kvmlite.backends.net.socket_stream import StreamSocketBackend

__all__ = ["NetBackend", "StreamSocketBackend"]

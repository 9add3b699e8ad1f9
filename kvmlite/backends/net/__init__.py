"""Network backends: the host side of virtio-net (see docs/networking.md).

The interface every backend has is in ``base``; ``socket_stream`` carries
frames over a unix stream socket (QEMU ``-netdev stream`` / passt framing),
``tap`` (``TapBackend``) a tap interface, ``passt`` (``PasstBackend``) the
user-mode network; ``open.open_net`` opens any of them from the ``-n``
configuration (``kvmlite.config.net.NetConfig``). tap and passt are
imported where used, to keep start-up short.
"""

from kvmlite.backends.net.base import NetBackend
from kvmlite.backends.net.socket_stream import StreamSocketBackend

__all__ = ["NetBackend", "StreamSocketBackend"]

"""vhost-user back-end: serve a ``kvmlite.devices.virtio`` model to another VMM.

Follows QEMU docs/interop/vhost-user.rst. ``protocol`` is the sans-IO message
layer, ``backend`` the unix-socket server that drives a ``VirtioDevice``.
See docs/vhost-user.md.
"""

from kvmlite.vhost_user.protocol import ProtocolError

__all__ = ["ProtocolError"]

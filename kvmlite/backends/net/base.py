"""The host side of a virtio-net device: what sends and receives Ethernet frames.

A backend is small so the VMM's epoll loop can drive any of them the same way:

* ``send(frame)`` hands one guest frame to the host. It never blocks: a
  backend whose peer is slow buffers (up to a limit, then says so through
  ``can_send()``), and the device leaves further frames in the guest's ring.
* ``recv_frames()`` is called when ``fileno()`` is readable and returns the
  frames that are complete now (possibly none); it never blocks.
* ``vnet_hdr``: frames in both directions start with the 12-byte
  ``virtio_net_hdr_v1`` (a tap with IFF_VNET_HDR); the device then offers
  checksum and segmentation offloads and passes the header through.
* ``set_offloads(features)``: the virtio features the guest accepted, so a
  tap can be told (TUNSETOFFLOAD) which offloaded frames the guest can take.
* ``wants_write()`` / ``flush()``: buffered output is waiting; the loop
  watches ``fileno()`` for writability and calls ``flush()``.
* ``close()`` releases everything; idempotent.
"""

from __future__ import annotations


class NetBackend:
    """Base class with the do-nothing parts of the interface."""

    #: Frames carry a 12-byte virtio_net_hdr_v1 in front.
    vnet_hdr: bool = False
    #: True once the peer went away for good; the loop stops watching the fd.
    closed: bool = False

    def send(self, frame: bytes) -> None:
        raise NotImplementedError

    def recv_frames(self) -> list[bytes]:
        raise NotImplementedError

    def fileno(self) -> int | None:
        return None

    def can_send(self) -> bool:
        """False while output is backed up; the device then leaves TX chains queued."""
        return True

    def wants_write(self) -> bool:
        """Output is buffered: watch ``fileno()`` for writability and call ``flush()``."""
        return False

    def flush(self) -> None:
        """Write out buffered output as far as the fd takes it now."""

    def set_offloads(self, features: int) -> None:
        """The guest's accepted virtio-net features (only vnet_hdr backends care)."""

    def close(self) -> None:
        pass

"""The host side of a virtio-net device: what sends and receives Ethernet frames.

A backend is small so the VMM's epoll loop can drive any of them the same way:

* ``send(frame)`` hands one guest frame to the host. It never blocks: a
  backend whose peer is slow buffers (up to a limit, then says so through
  ``can_send()``), and the device leaves further frames in the guest's ring.
* ``fileno()`` is the one fd the loop watches for readability, for the
  backend's whole life. When it is readable the loop calls ``service()``
  (housekeeping: accept a peer, write buffered output) and then the
  device's ``handle_rx``, which calls ``recv_frames()``: the frames that are
  complete now (possibly none); it never blocks.
* ``set_reading(on)``: while off, incoming frames do not make ``fileno()``
  readable (the guest has no receive buffers: back-pressure); frames wait
  in the host socket or tap queue, not in our memory.
* ``vnet_hdr``: frames in both directions start with the 12-byte
  ``virtio_net_hdr_v1`` (a tap with IFF_VNET_HDR); the device then offers
  checksum and segmentation offloads and passes the header through.
* ``set_offloads(features)``: the virtio features the guest accepted, so a
  tap can be told (TUNSETOFFLOAD) which offloaded frames the guest can take.
* ``wants_write()`` / ``flush()``: buffered output is waiting; ``service()``
  flushes it when the fd says it can be written.
* ``close()`` releases everything; idempotent.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
B = TypeVar("B", bound="NetBackend")


def locked(method: Callable[Concatenate[B, P], R]) -> Callable[Concatenate[B, P], R]:
    """Run a backend method under ``self._lock``.

    The device sends on whichever thread kicked the transmit queue (a vCPU
    thread for a notify write without an ioeventfd) while the I/O loop reads,
    flushes and services the same fd: one lock keeps a backend's buffers and
    its epoll registration consistent.
    """

    @functools.wraps(method)
    def wrapper(self: B, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class NetBackend:
    """Base class with the do-nothing parts of the interface."""

    #: Frames carry a 12-byte virtio_net_hdr_v1 in front.
    vnet_hdr: bool = False
    #: True once the peer went away for good; the loop stops watching the fd.
    closed: bool = False
    #: Taken by the methods decorated with ``locked``.
    _lock: threading.RLock

    def send(self, frame: bytes) -> None:
        raise NotImplementedError

    def recv_frames(self) -> list[bytes]:
        raise NotImplementedError

    def fileno(self) -> int | None:
        return None

    def service(self) -> None:
        """Housekeeping when ``fileno()`` is readable; never blocks."""

    def set_reading(self, on: bool) -> None:
        """Whether incoming frames make ``fileno()`` readable."""

    def can_send(self) -> bool:
        """False while output is backed up; the device then leaves TX chains queued."""
        return True

    def wants_write(self) -> bool:
        """Output is buffered (``service()`` writes it when it can)."""
        return False

    def flush(self) -> None:
        """Write out buffered output as far as the fd takes it now."""

    def set_offloads(self, features: int) -> None:
        """The guest's accepted virtio-net features (only vnet_hdr backends care)."""

    def close(self) -> None:
        pass

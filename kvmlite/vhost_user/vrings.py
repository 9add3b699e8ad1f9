"""vhost-user rings: the SET_VRING_* / GET_VRING_BASE requests and kicks.

QEMU docs/interop/vhost-user.rst, "Starting and stopping rings". A mixin of
``VhostUserBackend`` (kvmlite/vhost_user/backend.py, which owns the socket,
the session and the device): each ring is a ``VirtQueue`` programmed from
the front-end's messages, its addresses translated from the front-end's
user addresses through the memory table and checked to lie in it; a ring
starts when its kick fd arrives and stops at GET_VRING_BASE.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvmlite.devices.virtio.queue import DESC_SIZE, VirtQueue
from kvmlite.eventloop import EventLoop
from kvmlite.vhost_user import protocol as p
from kvmlite.vhost_user.channel import ConfigChangeInterrupt
from kvmlite.vhost_user.memmap import BackendError
from kvmlite.vhost_user.protocol import Request

if TYPE_CHECKING:
    from kvmlite.vhost_user.backend import Session, VhostUserBackend

log = logging.getLogger("kvmlite.vhost_user")


class CallInterrupt:
    """A queue's interrupt: writes the front-end's call eventfd (none: dropped)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.fd: int | None = None
        self._warned = False

    def trigger(self) -> None:
        fd = self.fd
        if fd is None:
            return
        try:
            os.eventfd_write(fd, 1)
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.error("queue %d: cannot signal the call fd: %s", self.index, e)

    def set_fd(self, fd: int | None) -> None:
        old, self.fd = self.fd, fd
        if old is not None:
            os.close(old)


@dataclass
class Vring:
    queue: VirtQueue
    call: CallInterrupt
    kick_fd: int | None = None
    err_fd: int | None = None
    started: bool = False
    #: "Ring states": without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled
    #: from the start; with it, disabled until SET_VRING_ENABLE (see _set_features).
    enabled: bool = False
    addr: p.VringAddr | None = None


class VringRequests:
    """The ring requests of one ``VhostUserBackend`` (composition: the back-end
    owns one and hands it the SET_VRING_* / GET_VRING_BASE messages)."""

    def __init__(self, backend: VhostUserBackend) -> None:
        self.backend = backend
        self.device = backend.device
        self.loop: EventLoop = backend.loop

    def _vring(self, s: Session, index: int, req: Request) -> Vring:
        if not 0 <= index < len(s.vrings):
            raise BackendError(
                f"VHOST_USER_{req.name}: queue {index} does not exist "
                f"(the device has {len(s.vrings)})"
            )
        return s.vrings[index]

    def _set_vring_num(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        assert isinstance(body, p.VringState)
        v = self._vring(s, body.index, Request.SET_VRING_NUM)
        n, mx = body.num, v.queue.max_size
        if not 1 <= n <= mx or n & (n - 1):
            raise BackendError(f"queue {body.index}: size {n} is not a power of two <= {mx}")
        if n < mx:
            # virtio-blk's SEG_MAX is sized for the device's queue; a smaller ring
            # lets the driver build chains longer than the ring, which break it.
            log.warning(
                "%s: the front-end's queue %d has %d entries, the device's %d; give the"
                " back-end the front-end's queue size (kvmlite serve --queue-size %d)",
                self.device.name, body.index, n, mx, n,
            )  # fmt: skip
        v.queue.set_size(n)
        return None

    def _set_vring_addr(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        assert isinstance(body, p.VringAddr)
        v = self._vring(s, body.index, Request.SET_VRING_ADDR)
        if s.mem is None:
            raise BackendError("SET_VRING_ADDR before SET_MEM_TABLE")
        n = v.queue.size
        q = v.queue
        desc = s.mem.user_to_guest(body.descriptor, DESC_SIZE * n)
        avail = s.mem.user_to_guest(body.available, 6 + 2 * n)
        used = s.mem.user_to_guest(body.used, 6 + 8 * n)
        if desc % 16 or avail % 2 or used % 4:
            raise BackendError(f"queue {body.index}: misaligned rings")
        with self.device.lock:
            q.set_desc_table_address(desc & 0xFFFFFFFF, desc >> 32)
            q.set_avail_ring_address(avail & 0xFFFFFFFF, avail >> 32)
            q.set_used_ring_address(used & 0xFFFFFFFF, used >> 32)
        v.addr = body
        return None

    def _set_vring_base(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        assert isinstance(body, p.VringState)
        v = self._vring(s, body.index, Request.SET_VRING_BASE)
        v.queue.set_next_avail(body.num)
        v.queue.set_next_used(body.num)
        return None

    def _get_vring_base(self, s: Session, body: p.Payload, fds: list[int]) -> bytes:
        assert isinstance(body, p.VringState)
        v = self._vring(s, body.index, Request.GET_VRING_BASE)
        self.backend.drain_io()  # the index we return must not move afterwards
        self.stop_ring(v)
        v.call.set_fd(None)
        if s.active and not any(r.started for r in s.vrings):
            self.device.reset()  # the next start re-sends features and rings
            s.active = False
        return p.vring_state(body.index, v.queue.next_avail)

    def _set_vring_enable(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        assert isinstance(body, p.VringState)
        v = self._vring(s, body.index, Request.SET_VRING_ENABLE)
        if body.num not in (0, 1):
            raise BackendError(f"queue {body.index}: SET_VRING_ENABLE {body.num} is not 0 or 1")
        self.set_enabled(s, body.index, v, bool(body.num))
        return None

    def set_enabled(self, s: Session, index: int, v: Vring, on: bool) -> None:
        """Enable or disable a ring ("Ring states"): a disabled ring is not processed.

        The device sees the state as its ``VirtQueue.ready``: ``process_queue``
        skips a queue that is not ready and virtio-net's receive path does
        not write into it, so frames wait in the device (back-pressure)
        until the ring is enabled again.
        """
        was = v.enabled
        v.enabled = on
        if not v.started:
            return
        with self.device.lock:
            v.queue.set_ready(on)
        if on and not was:
            # Chains made available while disabled, and (net) frames that waited.
            self.device.process_queue(index)

    def _set_vring_kick(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        assert isinstance(body, p.VringFd)
        v = self._vring(s, body.index, Request.SET_VRING_KICK)
        if body.no_fd:
            raise BackendError(f"queue {body.index}: polling rings (no kick fd) are not supported")
        self.stop_ring(v)
        fd = fds.pop()
        os.set_blocking(fd, False)
        v.kick_fd = fd
        self.start_ring(s, body.index, v)
        return None

    def _set_vring_call(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        assert isinstance(body, p.VringFd)
        v = self._vring(s, body.index, Request.SET_VRING_CALL)
        v.call.set_fd(None if body.no_fd else fds.pop())
        return None

    def _set_vring_err(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        assert isinstance(body, p.VringFd)
        v = self._vring(s, body.index, Request.SET_VRING_ERR)
        close_fd(v.err_fd)
        v.err_fd = None if body.no_fd else fds.pop()
        return None

    def start_ring(self, s: Session, index: int, v: Vring) -> None:
        if s.mem is None or v.addr is None:
            raise BackendError(f"queue {index}: kick fd before SET_MEM_TABLE/SET_VRING_ADDR")
        mem = s.mem.memory
        q = v.queue
        with self.device.lock:
            q.set_ready(True)
            if not q.is_valid(mem):
                q.set_ready(False)
                raise BackendError(f"queue {index}: rings are not inside the memory table")
            q.set_ready(v.enabled)
            # The used index continues where the ring left it (a restart, a reconnect).
            q.set_next_used(mem.read_int(q.used_ring + 2, 2))
            if not s.active:
                self.device.ack_features(s.features)
                self.device.activate(
                    mem,
                    [r.queue for r in s.vrings],
                    [r.call for r in s.vrings],
                    ConfigChangeInterrupt(s.channel),
                )
                s.active = True
        assert v.kick_fd is not None
        self.loop.add_reader(v.kick_fd, lambda: self._on_kick(index))
        v.started = True
        if v.enabled:
            self.device.process_queue(index)  # chains made available before the kick fd came

    def stop_ring(self, v: Vring) -> None:
        if v.kick_fd is not None:
            if v.started:
                self.loop.remove_reader(v.kick_fd)
            os.close(v.kick_fd)
            v.kick_fd = None
        v.started = False
        with self.device.lock:
            v.queue.set_ready(False)

    def _on_kick(self, index: int) -> None:
        s = self.backend.session
        if s is None:
            return
        v = s.vrings[index]
        if v.kick_fd is not None:
            try:
                # An eventfd reads its 8-byte counter; b"" is a pipe or socket whose
                # writer went away, readable (EPOLLHUP) for ever: the loop would spin.
                hung_up = os.read(v.kick_fd, 8) == b""
            except BlockingIOError:
                hung_up = False
            except OSError:
                hung_up = True
            if hung_up:
                log.warning(
                    "%s: queue %d: the kick fd hung up; the ring is stopped until"
                    " the front-end sends a new SET_VRING_KICK",
                    self.device.name,
                    index,
                )
                self.stop_ring(v)
                return
        self.device.process_queue(index)

    # -- handlers: config space ------------------------------------------------------


#: The ring requests and their handlers (called as ``handler(rings, session, body, fds)``).
VRING_HANDLERS: dict[Request, Callable[..., bytes | None]] = {
    Request.SET_VRING_NUM: VringRequests._set_vring_num,
    Request.SET_VRING_ADDR: VringRequests._set_vring_addr,
    Request.SET_VRING_BASE: VringRequests._set_vring_base,
    Request.GET_VRING_BASE: VringRequests._get_vring_base,
    Request.SET_VRING_ENABLE: VringRequests._set_vring_enable,
    Request.SET_VRING_KICK: VringRequests._set_vring_kick,
    Request.SET_VRING_CALL: VringRequests._set_vring_call,
    Request.SET_VRING_ERR: VringRequests._set_vring_err,
}


def close_fd(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass

"""The vhost-user back-end: a unix-socket server driving a ``VirtioDevice``.

Follows QEMU docs/interop/vhost-user.rst ("Back-end" role).

Theory of operation
-------------------
One thread runs ``serve_forever()``: the VMM's own ``EventLoop``
(kvmlite/vmm/eventloop.py) over the listening socket, the connected
front-end's socket, every started ring's kick eventfd and any extra fds the
device needs watched (virtio-blk's I/O completion eventfd); a callback that
raises is logged there, so nothing escapes the loop.  One front-end is served at a time; while
one is connected the listening socket is not watched, so a second front-end
waits in the backlog until the first leaves.

The device is the same ``kvmlite.devices.virtio`` object kvmlite itself uses
(DESIGN.md rule 1).  The back-end owns one ``VirtQueue`` per device queue and
programs it from SET_VRING_NUM / SET_VRING_ADDR / SET_VRING_BASE.  A ring is
*started* when its kick fd arrives (vhost-user.rst "Starting and stopping
rings"); on the first start the device is activated with all its queues, a
``CallInterrupt`` per queue (writes the call eventfd) and ``process_queue(i)``
runs on every kick.  GET_VRING_BASE stops the ring (in-flight requests are
drained first, so the index it returns is final); when every ring is stopped
the device is reset, ready for the next start.

A ring is processed only while started *and* enabled ("Ring states"): with
VHOST_USER_F_PROTOCOL_FEATURES negotiated it starts disabled until
SET_VRING_ENABLE 1, without it enabled.  The state reaches the device as the
queue's ``ready`` flag, which ``VirtioDevice.process_queue`` and virtio-net's
receive path already honour, so the devices need nothing vhost-specific.

Front-end input is host input but still not trusted: a malformed message is a
``ProtocolError`` and closes the connection; a request we cannot carry out
(rings outside the memory table, an fd that cannot be mapped) is a
``BackendError``, answered with a failure when REPLY_ACK asked for an answer,
else the connection is closed.  Either way one log line, and the back-end
unmaps the memory, resets the device and listens for the next front-end.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kvmlite.backends.unix_path import check_unix_path, clear_stale_socket
from kvmlite.devices.virtio.device import VirtioDevice
from kvmlite.devices.virtio.queue import VirtQueue
from kvmlite.devices.virtio.spec import VIRTIO_F_EVENT_IDX, VIRTIO_ID_NET
from kvmlite.errors import ConfigError
from kvmlite.eventloop import EventLoop
from kvmlite.vhost_user import protocol as p
from kvmlite.vhost_user.channel import BackendChannel
from kvmlite.vhost_user.memmap import BackendError, MappedMemory
from kvmlite.vhost_user.protocol import ProtocolError, ProtocolFeature, Request
from kvmlite.vhost_user.vrings import (
    VRING_HANDLERS,
    CallInterrupt,
    Vring,
    VringRequests,
    close_fd,
)

log = logging.getLogger("kvmlite.vhost_user")

#: Protocol features offered: REPLY_ACK, CONFIG (GET/SET_CONFIG), MQ and
#: BACKEND_REQ (config-change messages, kvmlite/vhost_user/channel.py).
PROTOCOL_FEATURES = (
    (1 << ProtocolFeature.MQ)
    | (1 << ProtocolFeature.REPLY_ACK)
    | (1 << ProtocolFeature.CONFIG)
    | (1 << ProtocolFeature.BACKEND_REQ)
)


def default_protocol_features(device: VirtioDevice) -> int:
    """The protocol features offered for ``device``.

    virtio-net goes without CONFIG: QEMU's virtio-net answers the guest's
    config reads itself and warns at start-up ("backend supports
    VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not") when a net back-end
    offers it.
    """
    if device.device_type == VIRTIO_ID_NET:
        return PROTOCOL_FEATURES & ~(1 << ProtocolFeature.CONFIG)
    return PROTOCOL_FEATURES


#: How long a started message may take to arrive whole before we give up on it
#: (the whole message, so a front-end trickling bytes cannot hold the loop longer).
MESSAGE_TIMEOUT_S = 5.0
#: How long GET_VRING_BASE / disconnect wait for in-flight I/O.
DRAIN_TIMEOUT_S = 10.0


@dataclass
class Session:
    """What one connected front-end set up; all of it goes at disconnect."""

    conn: socket.socket
    vrings: list[Vring]
    features: int = 0
    protocol_features: int = 0
    owner: bool = False
    mem: MappedMemory | None = None
    active: bool = False
    extra: dict[str, object] = field(default_factory=dict)
    channel: BackendChannel = field(default_factory=BackendChannel)


class VhostUserBackend:
    """Serve ``device`` on the unix socket ``path``.

    ``watch`` lists extra ``(fd, callback)`` pairs the loop watches for the
    device (``(executor.completion_fd, executor.run_completions)`` for
    virtio-blk with a ``ThreadPoolIoExecutor``). ``protocol_features``:
    what GET_PROTOCOL_FEATURES offers (default ``default_protocol_features``).
    """

    def __init__(
        self,
        device: VirtioDevice,
        path: str,
        *,
        watch: Sequence[tuple[int, Callable[[], object]]] = (),
        protocol_features: int | None = None,
    ) -> None:
        self.device = device
        self.protocol_features = (
            default_protocol_features(device) if protocol_features is None else protocol_features
        )
        self.path = os.fspath(path)
        self.loop = EventLoop()
        for fd, cb in watch:
            self.loop.add_reader(fd, cb)  # type: ignore[arg-type]
        self._stopping = False
        self.session: Session | None = None
        self.rings = VringRequests(self)
        #: Connections served so far (tests watch it to see reconnects).
        self.connections = 0
        device.needs_reset_handler = lambda: log.error(
            "%s: device needs reset; the front-end must restart it", device.name
        )
        self._listener = self._listen()

    # -- socket setup ---------------------------------------------------------------

    def _listen(self) -> socket.socket:
        check_unix_path(self.path, "vhost-user --socket")
        clear_stale_socket(self.path, "vhost-user --socket")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.bind(self.path)
            s.listen(1)
        except OSError as e:
            s.close()
            raise ConfigError(
                f"cannot listen on {self.path}: {e.strerror}; pick another --socket path"
            ) from None
        return s

    # -- loop -------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve front-ends, one after another, until ``stop()``."""
        self.loop.add_reader(self._listener.fileno(), self._accept)
        try:
            self.loop.run()
        finally:
            self._disconnect("back-end stopping")
            self.loop.remove_reader(self._listener.fileno())

    def stop(self) -> None:
        """Make ``serve_forever`` return (any thread, or a signal handler)."""
        self._stopping = True
        self.loop.stop()

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the loop's thread (thread-safe)."""
        self.loop.call_soon(fn)  # type: ignore[arg-type]

    def wake(self) -> None:
        """Make the loop go round once (thread-safe): fds it watches changed state."""
        self.loop.call_soon(lambda: None)

    def add_watch(self, fd: int, callback: Callable[[], object]) -> None:
        """Watch ``fd`` for readability (loop thread); an fd already watched changes callback."""
        self.loop.remove_reader(fd)
        self.loop.add_reader(fd, callback)  # type: ignore[arg-type]

    def remove_watch(self, fd: int) -> None:
        """Stop watching ``fd`` (loop thread); unknown fds are ignored."""
        self.loop.remove_reader(fd)

    def close(self) -> None:
        """Release the socket and the loop's fds (after ``serve_forever`` returned)."""
        self._listener.close()
        self.loop.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError as e:
            log.warning("accept on %s failed: %s", self.path, e)
            return
        conn.settimeout(MESSAGE_TIMEOUT_S)
        vrings = [
            Vring(VirtQueue(size), CallInterrupt(i))
            for i, size in enumerate(self.device.queue_max_sizes)
        ]
        self.session = Session(conn, vrings)
        self.connections += 1
        self.loop.remove_reader(self._listener.fileno())
        self.loop.add_reader(conn.fileno(), self._on_message)
        log.info("front-end connected to %s", self.path)

    def _disconnect(self, reason: str) -> None:
        """Forget the front-end: stop rings, drain, reset the device, unmap, listen again."""
        s = self.session
        if s is None:
            return
        self.session = None
        log.info("front-end of %s disconnected: %s", self.path, reason)
        self.loop.remove_reader(s.conn.fileno())
        s.conn.close()
        s.channel.close()
        try:
            self.drain_io()
            for v in s.vrings:
                self.rings.stop_ring(v)
                v.call.set_fd(None)
                close_fd(v.err_fd)
                v.err_fd = None
                v.queue.reset()  # drops its cached views of guest RAM
            self.device.reset()
        finally:
            # Even when a device's reset fails (a bug, logged by the loop) the memory
            # goes and the next front-end is served; otherwise the back-end hangs.
            if s.mem is not None:
                s.mem.close()
            if not self._stopping:
                self.loop.add_reader(self._listener.fileno(), self._accept)

    def drain_io(self) -> None:
        """Wait (bounded) for the device's in-flight I/O."""
        drain = getattr(self.device, "drain", None)
        if drain is not None and not drain(DRAIN_TIMEOUT_S):
            log.error("%s: in-flight I/O did not finish in %ss", self.device.name, DRAIN_TIMEOUT_S)

    # -- messages ---------------------------------------------------------------------

    def _on_message(self) -> None:
        s = self.session
        assert s is not None
        fds: list[int] = []
        try:
            msg = self._receive(s.conn, fds)
            if msg is None:
                self._disconnect("connection closed")
                return
            hdr, payload = msg
            body = p.parse_payload(hdr.request, payload, len(fds))
            self._dispatch(s, hdr, body, fds)
        except ProtocolError as e:
            log.error("%s: protocol error: %s; closing the connection", self.path, e)
            self._disconnect(str(e))
        except (BackendError, OSError) as e:
            log.error("%s: %s; closing the connection", self.path, e)
            self._disconnect(str(e))
        except Exception as e:  # a bug of ours: drop this front-end, keep serving
            log.exception("%s: internal error handling a message", self.path)
            self._disconnect(repr(e))
        finally:
            for fd in fds:
                close_fd(fd)

    @staticmethod
    def _receive(conn: socket.socket, fds: list[int]) -> tuple[p.Header, bytes] | None:
        """One message; fds come with its first bytes (appended to ``fds``)."""
        try:
            data, got, flags, _ = socket.recv_fds(conn, p.HEADER_SIZE, p.VHOST_MEMORY_MAX_NREGIONS)
        except TimeoutError:
            raise ProtocolError("message did not arrive") from None
        except ConnectionResetError:
            return None
        fds.extend(got)
        if not data:
            return None
        if flags & socket.MSG_CTRUNC:
            raise ProtocolError(f"more than {p.VHOST_MEMORY_MAX_NREGIONS} fds in one message")
        deadline = time.monotonic() + MESSAGE_TIMEOUT_S
        data += _recv_exact(conn, p.HEADER_SIZE - len(data), deadline)
        hdr = p.parse_header(data)
        payload = _recv_exact(conn, hdr.size, deadline)
        conn.settimeout(MESSAGE_TIMEOUT_S)  # for the reply's sendall
        return hdr, payload

    def _reply(self, s: Session, request: int, payload: bytes) -> None:
        s.conn.sendall(p.encode(request, payload, reply=True))

    def _dispatch(self, s: Session, hdr: p.Header, body: p.Payload, fds: list[int]) -> None:
        req = Request(hdr.request)
        log.debug("VHOST_USER_%s %s", req.name, body)
        handler = self._HANDLERS.get(req)
        target: object = self
        if handler is None and req in VRING_HANDLERS:
            handler, target = VRING_HANDLERS[req], self.rings
        ack = hdr.need_reply and bool(s.protocol_features & (1 << ProtocolFeature.REPLY_ACK))
        if handler is None:
            err: BackendError | None = BackendError(f"VHOST_USER_{req.name} is not supported")
            reply = None
        else:
            try:
                reply = handler(target, s, body, fds)
                err = None
            except BackendError as e:
                err, reply = e, None
        if reply is not None:  # requests with their own reply never get an ack too
            if err is None:
                self._reply(s, req, reply)
                return
        if err is not None:
            if not ack or req in _REPLYING:
                raise err
            log.error("%s: VHOST_USER_%s failed: %s", self.path, req.name, err)
        if ack:
            self._reply(s, req, p.u64(0 if err is None else 1))

    # -- handlers: features and ownership -----------------------------------------

    def _get_features(self, s: Session, body: p.Payload, fds: list[int]) -> bytes:
        return p.u64(self.device.avail_features | 1 << p.VHOST_USER_F_PROTOCOL_FEATURES)

    def _set_features(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        assert isinstance(body, int)
        offered = self.device.avail_features | 1 << p.VHOST_USER_F_PROTOCOL_FEATURES
        if body & ~offered:
            raise BackendError(f"features {body & ~offered:#x} were not offered")
        s.features = body
        with self.device.lock:
            self.device.ack_features(body)
            for v in s.vrings:  # a running device may see EVENT_IDX change (logging)
                v.queue.set_event_idx(self.device.has_feature(VIRTIO_F_EVENT_IDX))
        if not body & (1 << p.VHOST_USER_F_PROTOCOL_FEATURES):
            # "Ring states": without protocol features there is no SET_VRING_ENABLE,
            # so rings are enabled from the start.
            for i, v in enumerate(s.vrings):
                self.rings.set_enabled(s, i, v, True)
        return None

    def _get_protocol_features(self, s: Session, body: p.Payload, fds: list[int]) -> bytes:
        return p.u64(self.protocol_features)

    def _set_protocol_features(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        assert isinstance(body, int)
        # Unknown bits are ignored, like libvhost-user: the front-end asked for
        # what we offered and may run with less.
        s.protocol_features = body & self.protocol_features
        return None

    def _get_queue_num(self, s: Session, body: p.Payload, fds: list[int]) -> bytes:
        return p.u64(self.device.num_queues)

    def _set_owner(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        s.owner = True
        return None

    def _reset_owner(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        self.drain_io()
        for v in s.vrings:
            self.rings.stop_ring(v)
            v.queue.reset()
        self.device.reset()
        s.active = False
        s.owner = False
        return None

    # -- handlers: memory -------------------------------------------------------------

    def _set_mem_table(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        assert isinstance(body, p.MemoryTable)
        mem = MappedMemory(body.regions, fds)
        started = [v for v in s.vrings if v.started]
        lost = [i for i, v in enumerate(s.vrings) if v.started and not v.queue.is_valid(mem.memory)]
        if lost:  # refuse before changing anything: the running rings keep the old table
            mem.close()
            raise BackendError(f"the new memory table does not hold the rings of queues {lost}")
        old, s.mem = s.mem, mem
        if s.active:
            # Hot-(un)plugged RAM while running: the rings keep their guest addresses.
            with self.device.lock:
                self.device.memory = mem.memory
                for v in started:
                    # Re-caches the queue's ring views in the new mapping, which drops
                    # its views of the old one so that close() below can unmap it.
                    v.queue.avail_idx(mem.memory)
        if old is not None:
            old.close()
        return None

    # -- handlers: rings --------------------------------------------------------------

    def _get_config(self, s: Session, body: p.Payload, fds: list[int]) -> bytes:
        assert isinstance(body, p.ConfigSpace)
        data = self.device.read_config(body.offset, body.size)
        return p.config_space(body.offset, data, flags=body.flags)

    def _set_config(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        assert isinstance(body, p.ConfigSpace)
        with self.device.lock:
            self.device.write_config(body.offset, body.data)
        return None

    def _set_backend_req_fd(self, s: Session, body: p.Payload, fds: list[int]) -> None:
        if not s.protocol_features & (1 << ProtocolFeature.BACKEND_REQ):
            raise BackendError("SET_BACKEND_REQ_FD without the BACKEND_REQ protocol feature")
        fd = fds.pop()
        try:
            s.channel.attach(fd)
        except OSError as e:
            os.close(fd)
            raise BackendError(
                f"SET_BACKEND_REQ_FD: the fd is not a socket ({e.strerror})"
            ) from None
        return None

    _HANDLERS: dict[Request, Callable[..., bytes | None]] = {
        Request.GET_FEATURES: _get_features,
        Request.SET_FEATURES: _set_features,
        Request.GET_PROTOCOL_FEATURES: _get_protocol_features,
        Request.SET_PROTOCOL_FEATURES: _set_protocol_features,
        Request.GET_QUEUE_NUM: _get_queue_num,
        Request.SET_OWNER: _set_owner,
        Request.RESET_OWNER: _reset_owner,
        Request.SET_MEM_TABLE: _set_mem_table,
        Request.GET_CONFIG: _get_config,
        Request.SET_CONFIG: _set_config,
        Request.SET_BACKEND_REQ_FD: _set_backend_req_fd,
    }


#: Requests whose answer is their own reply (no REPLY_ACK on top; errors disconnect).
_REPLYING = frozenset(
    {
        Request.GET_FEATURES,
        Request.GET_PROTOCOL_FEATURES,
        Request.GET_QUEUE_NUM,
        Request.GET_VRING_BASE,
        Request.GET_CONFIG,
    }
)


def _recv_exact(conn: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = conn.recv(n - len(buf))
        except TimeoutError:
            raise ProtocolError(f"message truncated: {len(buf)} of {n} bytes arrived") from None
        if not chunk:
            raise ProtocolError(f"connection closed inside a message ({len(buf)} of {n} bytes)")
        buf += chunk
    return bytes(buf)

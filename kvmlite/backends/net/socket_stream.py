"""Ethernet frames over a unix stream socket: QEMU ``-netdev stream`` and passt framing.

Each frame on the wire is a 4-byte big-endian length followed by that many
bytes of Ethernet frame (no virtio-net header). This is the framing of
QEMU's ``-netdev stream`` / ``-netdev socket`` (net/stream.c) and of passt's
``--socket`` (qemu mode), so two kvmlite guests, a kvmlite guest and a QEMU
guest, or a kvmlite guest and passt can be wired together.

Theory of operation
-------------------
The backend is either a server (listens on a path, takes one peer at a time,
refuses others, accepts again when its peer leaves), a client (connects to a
path) or wraps an already connected socket. Every socket is non-blocking.

``fileno()`` is an internal epoll fd, so it stays the same while peers come
and go; it is readable when something needs doing: a peer is waiting to be
accepted, frames arrived (only while reading is on, see ``set_reading``), or
buffered output can be written. The VMM watches it and, when readable, calls
``service()`` (accept, flush, notice hang-ups), then the device's
``handle_rx`` (which calls ``recv_frames``).

Invariants: ``_in`` holds at most one incomplete frame after ``recv_frames``
returns (complete frames are always handed out, so no frame hides in the
buffer while the fd looks idle); ``_out`` grows by at most one frame past
``MAX_BUFFERED`` (the device asks ``can_send()`` before each frame). A length
of 0 or above ``MAX_FRAME_LEN`` means the peer does not speak this protocol:
the connection is closed with one log line.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import stat
import struct
import threading

from kvmlite.backends.net.base import NetBackend, locked
from kvmlite.backends.unix_path import check_unix_path
from kvmlite.devices.virtio.net_spec import MAX_FRAME_LEN
from kvmlite.errors import ConfigError

log = logging.getLogger("kvmlite.backends.net")

LENGTH = struct.Struct(">I")
#: Output kept for a slow peer before ``can_send()`` says stop.
MAX_BUFFERED = 256 * 1024
#: Bytes read per ``recv_frames`` call, so one busy peer cannot starve the loop.
READ_BUDGET = 256 * 1024


class StreamSocketBackend(NetBackend):
    """Frames over a unix stream socket, as server, client or on a given socket."""

    vnet_hdr = False

    def __init__(
        self,
        sock: socket.socket | None = None,
        *,
        listener: socket.socket | None = None,
        path: str | None = None,
        name: str = "net-stream",
    ) -> None:
        self.name = name
        self.path = path
        self._lock = threading.RLock()
        self._epoll = select.epoll()
        self._listener = listener
        self._conn: socket.socket | None = None
        self._path_ino: int | None = None
        self._in = bytearray()
        self._out = bytearray()
        self._reading = True
        self._events = 0  # the epoll mask the connection is registered with (0: none)
        self._tx_dead = False
        self.closed = False
        self.tx_dropped = 0
        self.rx_frames = 0
        self.tx_frames = 0
        try:
            if listener is not None:
                listener.setblocking(False)
                self._epoll.register(listener.fileno(), select.EPOLLIN)
                if path is not None:
                    self._path_ino = os.stat(path).st_ino
            if sock is not None:
                self._attach(sock)
        except BaseException:
            self._epoll.close()
            raise

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def listen(cls, path: str, *, name: str = "net-stream") -> StreamSocketBackend:
        """A server on ``path``; one peer at a time."""
        check_unix_path(path, name)
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            lsock.bind(path)
            lsock.listen(1)
        except OSError as e:
            lsock.close()
            hint = (
                "remove the stale socket or choose another path"
                if e.errno == errno.EADDRINUSE
                else "check the directory exists and is writable"
            )
            raise ConfigError(f"{name}: cannot listen on {path}: {e.strerror}; {hint}") from None
        try:
            return cls(listener=lsock, path=path, name=name)
        except BaseException:
            lsock.close()
            with contextlib.suppress(OSError):
                os.unlink(path)  # bound a moment ago by us
            raise

    @classmethod
    def connect(cls, path: str, *, name: str = "net-stream") -> StreamSocketBackend:
        """A client of the server listening on ``path``."""
        check_unix_path(path, name)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
        except OSError as e:
            sock.close()
            raise ConfigError(
                f"{name}: cannot connect to {path}: {e.strerror}; start the peer"
                " (another kvmlite, QEMU -netdev stream,server=on, or passt) first"
            ) from None
        try:
            return cls(sock, name=name)
        except BaseException:
            sock.close()
            raise

    def _attach(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._conn = sock
        self._in.clear()
        self._out.clear()
        self._tx_dead = False
        self._update_events()

    def _update_events(self) -> None:
        """Watch the connection for exactly what we can act on now.

        While reading is off the connection is not watched for input nor
        hang-up (epoll reports HUP whether asked or not, so it is unregistered
        unless output waits): frames the peer sent before leaving stay in the
        socket and are read, then the EOF, once reading is back on. The mask
        in force is remembered, so the call after every sent frame costs no
        epoll_ctl unless something changed.
        """
        if self._conn is None:
            return
        ev = (select.EPOLLIN | select.EPOLLRDHUP if self._reading else 0) | (
            select.EPOLLOUT if self._out else 0
        )
        if ev == self._events:
            return
        fd = self._conn.fileno()
        if not ev:
            self._epoll.unregister(fd)
        elif self._events:
            self._epoll.modify(fd, ev)
        else:
            self._epoll.register(fd, ev)
        self._events = ev

    def _close_conn(self) -> None:
        """Forget the peer: stop watching and close its socket, drop both buffers."""
        assert self._conn is not None
        if self._events:
            self._epoll.unregister(self._conn.fileno())
            self._events = 0
        self._conn.close()
        self._conn = None
        self._in.clear()
        self._out.clear()

    def _drop_peer(self, why: str) -> None:
        if self._conn is None:
            return
        log.warning("%s: %s; connection closed", self.name, why)
        self._close_conn()
        if self._listener is None:
            self.closed = True  # a client has nobody to wait for

    # -- the NetBackend interface ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def fileno(self) -> int:
        return self._epoll.fileno()

    @locked
    def set_reading(self, on: bool) -> None:
        """Whether incoming frames make ``fileno()`` readable (off while the guest is full)."""
        if on != self._reading:
            self._reading = on
            self._update_events()

    @locked
    def service(self) -> None:
        """Accept a waiting peer and write buffered output; never blocks."""
        if self._listener is not None:
            self._accept()
        if self._conn is not None and self._out:
            self.flush()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("%s: accept failed: %s", self.name, e)
                return
            if self._conn is not None:
                log.warning("%s: refused a second peer; this socket takes one", self.name)
                sock.close()
                continue
            log.info("%s: peer connected", self.name)
            self._attach(sock)

    @locked
    def send(self, frame: bytes) -> None:
        if self._conn is None or self._tx_dead:
            # No cable plugged in: a NIC's frames go nowhere (counted, like ifconfig's drops).
            self.tx_dropped += 1
            return
        if not 0 < len(frame) <= MAX_FRAME_LEN:
            self.tx_dropped += 1
            log.warning("%s: not sending a frame of %d bytes", self.name, len(frame))
            return
        self._out += LENGTH.pack(len(frame))
        self._out += frame
        self.tx_frames += 1
        self.flush()

    def can_send(self) -> bool:
        return len(self._out) < MAX_BUFFERED

    def wants_write(self) -> bool:
        return bool(self._out)

    @locked
    def flush(self) -> None:
        if self._conn is None:
            return
        while self._out:
            try:
                n = self._conn.send(self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                # The peer is gone for sending; what it sent before is read
                # (and the EOF seen) through recv_frames.
                log.warning("%s: send failed: %s; dropping output", self.name, e.strerror)
                self._tx_dead = True
                self.tx_dropped += 1
                self._out.clear()
                self._update_events()
                return
            del self._out[:n]
        self._update_events()

    @locked
    def recv_frames(self) -> list[bytes]:
        if self._listener is not None:
            self._accept()
        if self._conn is None:
            return []
        budget = READ_BUDGET
        eof = False
        while budget > 0:
            try:
                data = self._conn.recv(min(budget, 65536))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._drop_peer(f"receive failed: {e.strerror}")
                return []
            if not data:
                eof = True
                break
            self._in += data
            budget -= len(data)
        frames = self._parse()
        if eof and self._conn is not None:
            self._drop_peer("peer closed the connection")
        return frames

    def _parse(self) -> list[bytes]:
        frames = []
        buf = self._in
        pos = 0
        bad = None
        # Slicing the view copies each frame once (a bytearray slice would copy it twice).
        with memoryview(buf) as view:
            while len(buf) - pos >= LENGTH.size:
                (n,) = LENGTH.unpack_from(buf, pos)
                if not 0 < n <= MAX_FRAME_LEN:
                    bad = n
                    break
                start = pos + LENGTH.size
                if len(buf) - start < n:
                    break
                frames.append(bytes(view[start : start + n]))
                pos = start + n
        self.rx_frames += len(frames)
        if bad is not None:
            self._drop_peer(
                f"peer sent a frame length of {bad} (allowed 1..{MAX_FRAME_LEN}): it does not"
                " speak the 4-byte big-endian length + Ethernet frame protocol"
            )  # which also emptied the buffer
            return frames
        del buf[:pos]
        return frames

    @locked
    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            self._unlink_own_socket()
        if not self._epoll.closed:
            self._epoll.close()
        self.closed = True

    def _unlink_own_socket(self) -> None:
        # Only remove the path if it is still the socket we created.
        if self.path is None or self._path_ino is None:
            return
        try:
            st = os.stat(self.path)
            if stat.S_ISSOCK(st.st_mode) and st.st_ino == self._path_ino:
                os.unlink(self.path)
        except OSError:
            pass

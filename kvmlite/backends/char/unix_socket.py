"""A console on a unix socket (QEMU's ``-serial unix:PATH,server``).

Server mode listens on ``path`` and serves one client at a time; while a
client is connected, others wait in the listen backlog until it leaves.
Client mode connects to a listening socket; when that peer closes, input
ends (``eof``).

Output with no client connected, or faster than the client reads, is
*buffered* up to ``buffer_limit`` bytes (64 KiB by default), keeping the
newest bytes and dropping the oldest, and sent when a client connects (so
``socat`` started after boot still sees the end of the boot log). ``write``
never blocks.

``fileno()`` is an epoll fd owned by the backend, watching the listening
socket and the client, so it stays the same while clients come and go.

``write`` runs on a vCPU thread (the guest's UART output) while
``read_available`` runs on the I/O loop; both send the pending output, so a
lock (a leaf lock, kvmlite/vmm/locking.py) guards the buffer and the client:
without it one thread's ``send`` held the buffer while the other resized it
(BufferError), and input read in that call was lost.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import stat
import threading

from kvmlite.backends.char.base import CharBackend
from kvmlite.backends.unix_path import check_unix_path
from kvmlite.errors import ConfigError

DEFAULT_BUFFER_LIMIT = 64 * 1024
READ_CHUNK = 4096


class UnixSocketBackend(CharBackend):
    def __init__(
        self, path: str, server: bool = True, buffer_limit: int = DEFAULT_BUFFER_LIMIT
    ) -> None:
        check_unix_path(path, "console socket")  # before anything is opened
        self.path = path
        self.server = server
        self._limit = buffer_limit
        self._pending = bytearray()
        self._lock = threading.RLock()
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._ep = select.epoll()
        try:
            if server:
                self._listen(path)
            else:
                self._connect(path)
        except BaseException:
            self.close()
            raise

    def _listen(self, path: str) -> None:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise ConfigError(f"console socket path {path!r} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # a stale socket from an earlier run
            else:
                raise ConfigError(f"console socket {path!r} is in use by another program")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
        except OSError as e:
            sock.close()
            raise ConfigError(f"cannot listen on console socket {path!r}: {e.strerror}") from None
        sock.listen(1)
        sock.setblocking(False)
        self._listener = sock
        self._ep.register(sock.fileno(), select.EPOLLIN)

    def _connect(self, path: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as e:
            sock.close()
            raise ConfigError(
                f"cannot connect to console socket {path!r}: {e.strerror}; "
                "start the program that listens there first"
            ) from None
        self._attach(sock)

    def _attach(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._client = sock
        self._ep.register(sock.fileno(), select.EPOLLIN)
        if self._listener is not None:
            self._ep.unregister(self._listener.fileno())
        self._flush()

    def _detach(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(OSError):
            self._ep.unregister(client.fileno())
        client.close()
        if self._listener is not None:
            self._ep.register(self._listener.fileno(), select.EPOLLIN)
        else:
            self.eof = True

    @property
    def connected(self) -> bool:
        return self._client is not None

    def fileno(self) -> int | None:
        return self._ep.fileno() if not self._ep.closed else None

    def write(self, data: bytes) -> None:
        with self._lock:
            self._pending += data
            if len(self._pending) > self._limit:
                del self._pending[: len(self._pending) - self._limit]
            self._flush()

    def _flush(self) -> None:
        if self._client is None or not self._pending:
            return
        try:
            sent = self._client.send(self._pending)
        except BlockingIOError:
            return
        except OSError:
            self._detach()
            return
        del self._pending[:sent]

    def read_available(self) -> bytes:
        with self._lock:
            return self._read_available()

    def _read_available(self) -> bytes:
        if self._ep.closed:
            return b""
        out = bytearray()
        for fd, _events in self._ep.poll(0):
            if self._listener is not None and fd == self._listener.fileno():
                if self._client is None:
                    try:
                        conn, _ = self._listener.accept()
                    except BlockingIOError:
                        continue
                    self._attach(conn)
            elif self._client is not None and fd == self._client.fileno():
                try:
                    data = self._client.recv(READ_CHUNK)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    out += data
                else:
                    self._detach()
        self._flush()
        return bytes(out)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        self._detach()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self._ep.close()

"""The REST API's unix socket: one accept thread, one thread per connection.

Each connection reads with a deadline: a request must arrive complete within
``request_timeout`` seconds of its first byte (a slow or stalled client is
answered 400 and dropped), and an idle keep-alive connection is closed after
``idle_timeout``. A client that disconnects mid-request loses only its own
request; at most ``MAX_CONNECTIONS`` are served at once. Requests go to
``handler(method, path, body) -> (status, json)``,
which is ``RestApi.handle`` (kvmlite/api/rest.py); the server itself knows
nothing of VMs.

The socket file is created by ``start()`` (refused if another process
listens there; a stale socket left by a killed process is replaced) and
removed by ``close()``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvmlite.api.http import (
    DEFAULT_MAX_BODY,
    Event,
    HttpError,
    RequestParser,
    continue_response,
    response,
)
from kvmlite.errors import ConfigError

log = logging.getLogger(__name__)

Handler = Callable[[str, str, bytes], tuple[int, Any]]
#: Connections served at once (a thread each); one more is answered 400 and closed.
MAX_CONNECTIONS = 256


def _stale(path: Path) -> bool:
    """``path`` is a unix socket nobody listens on (left by a killed process)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False


class ApiServer:
    def __init__(
        self,
        path: str | Path,
        handler: Handler,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        request_timeout: float = 10.0,
        idle_timeout: float = 300.0,
    ) -> None:
        self.path = Path(path)
        self.handler = handler
        self.max_body = max_body
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise ConfigError(f"API socket {self.path} exists and is not a socket")
            if not _stale(self.path):
                raise ConfigError(f"API socket {self.path} is in use by another process")
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
        except OSError as e:
            sock.close()
            raise ConfigError(f"cannot create the API socket {self.path}: {e.strerror}") from None
        sock.listen(128)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="api-accept", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._sock = None
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while not self._closing:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed
            with self._lock:
                full = len(self._conns) >= MAX_CONNECTIONS
                if not full:
                    self._conns.add(conn)
            if full:
                fault = {"fault_message": f"too many API connections (at most {MAX_CONNECTIONS})"}
                with contextlib.suppress(OSError):
                    conn.sendall(response(400, fault, keep_alive=False))
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="api-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._connection(conn)
        except OSError as e:
            log.debug("API connection dropped: %s", e)
        except Exception:
            log.exception("API connection failed")
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _connection(self, conn: socket.socket) -> None:
        parser = RequestParser(self.max_body)
        started: float | None = None  # when the current request's first byte came
        while not self._closing:
            try:
                event = parser.next_event()
            except HttpError as e:
                conn.sendall(response(e.status, {"fault_message": e.message}, keep_alive=False))
                return
            if event is Event.CONTINUE:
                conn.sendall(continue_response())
                continue
            if event is Event.NEED_DATA:
                if started is None and not parser.idle:
                    started = time.monotonic()
                if started is None:
                    conn.settimeout(self.idle_timeout)
                else:
                    left = self.request_timeout - (time.monotonic() - started)
                    if left <= 0:
                        message = f"the request did not arrive within {self.request_timeout} s"
                        fault = {"fault_message": message}
                        conn.sendall(response(400, fault, keep_alive=False))
                        return
                    conn.settimeout(left)
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    if started is None:
                        return  # idle for too long
                    continue  # the deadline check above answers and closes
                if not data:
                    return  # the client went away (perhaps mid-request)
                if started is None:
                    started = time.monotonic()
                parser.feed(data)
                continue
            started = None if parser.idle else time.monotonic()
            status, body = self.handler(event.method, event.path, event.body)
            conn.sendall(response(status, body, keep_alive=event.keep_alive))
            if not event.keep_alive:
                return
        return

"""The QMP monitor's sockets: one listening socket, any number of clients.

Theory of operation
-------------------
``QmpServer(vmm, address)`` binds at once (so a bad ``--qmp`` is an error
before the guest starts); ``start()`` subscribes to the VMM's events and
starts one thread that serves every client with ``selectors``. Each client
gets the greeting, then its own ``QmpSession`` (kvmlite/api/qmp.py). Its
commands run on this thread: a handler submits an action and waits for it
(kvmlite/api/qmp_commands.py), so one client's commands run in order and
clients are served one command at a time.

Events come from the VMM's loop thread; ``_on_event`` only queues them and
wakes this thread through a socketpair (a VMM listener must not block).
They go to every client that has finished capabilities negotiation.

A client that hangs up, sends bytes that cannot be parsed on (not UTF-8, a
message above the size cap) or does not read its output (more than
``MAX_OUTPUT`` pending) is dropped; the VM and the other clients are not
affected. ``close()`` sends what is still queued (the final ``SHUTDOWN``
event) for a moment, then closes every socket and removes a unix socket's
file.
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvmlite.api.address import SocketAddress
from kvmlite.api.qmp import (
    MAX_MESSAGE,
    QmpProtocolError,
    QmpSession,
    error_response,
    event_message,
    greeting,
)
from kvmlite.api.qmp_commands import make_commands

if TYPE_CHECKING:
    from kvmlite.vmm.vmm import VmEvent, Vmm

log = logging.getLogger(__name__)

#: A client with more unread output than this is dropped.
MAX_OUTPUT = 4 << 20
#: How long close() keeps sending queued output.
FLUSH_TIMEOUT = 2.0


def encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode() + b"\r\n"


@dataclass
class _Client:
    sock: socket.socket
    session: QmpSession
    out: bytearray = field(default_factory=bytearray)
    closing: bool = False  # drop once ``out`` is sent


class QmpServer:
    """See the module docstring."""

    def __init__(self, vmm: Vmm, address: SocketAddress, *, max_message: int = MAX_MESSAGE) -> None:
        self.vmm = vmm
        self._listener = address.listen()
        if address.path is None:
            host, port = self._listener.getsockname()[:2]
            address = SocketAddress(host=host, port=port)
        self.address = address
        self.max_message = max_message
        self._commands = make_commands(vmm)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._events: deque[VmEvent] = deque()
        self._clients: dict[socket.socket, _Client] = {}
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._thread: threading.Thread | None = None

    # -- life ---------------------------------------------------------------------

    def start(self) -> None:
        self.vmm.subscribe(self._on_event)
        self._sel.register(self._listener, selectors.EVENT_READ)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name="qmp", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.vmm.unsubscribe(self._on_event)
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(FLUSH_TIMEOUT + 5)
        else:
            self._listener.close()
        for s in (self._wake_r, self._wake_w):
            s.close()
        self._sel.close()
        if self.address.path is not None:
            try:
                self.address.path.unlink()
            except FileNotFoundError:
                pass

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def _on_event(self, event: VmEvent) -> None:  # the VMM loop's thread: no blocking
        self._events.append(event)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake, or closed

    # -- the thread ------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                for key, mask in self._sel.select():
                    sock = key.fileobj
                    if sock is self._listener:
                        self._accept()
                    elif sock is self._wake_r:
                        self._drain_wake()
                    else:
                        client = self._clients.get(sock)  # type: ignore[call-overload]
                        if client is not None:
                            self._service(client, mask)
                self._deliver_events()
                self._update_interest()
        except Exception:
            log.exception("the QMP server failed")
        finally:
            self._deliver_events()
            self._flush_all()
            self._listener.close()

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("QMP accept failed: %s", e)
            return
        sock.setblocking(False)
        client = _Client(sock, QmpSession(self._commands, max_message=self.max_message))
        client.out += encode(greeting())
        self._clients[sock] = client
        self._sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _service(self, client: _Client, mask: int) -> None:
        if mask & selectors.EVENT_READ and not client.closing:
            try:
                data = client.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._drop(client, "hung up")
                return
            if data:
                try:
                    for response in client.session.receive(data):
                        client.out += encode(response)
                except QmpProtocolError as e:
                    client.out += encode(error_response("GenericError", str(e)))
                    client.closing = True
        if client.out:
            try:
                sent = client.sock.send(client.out)
                del client.out[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(client, "went away")
                return
        if len(client.out) > MAX_OUTPUT:
            self._drop(client, "does not read its output")
        elif client.closing and not client.out:
            self._drop(client, "sent input that cannot be parsed")

    def _deliver_events(self) -> None:
        while self._events:
            event = self._events.popleft()
            data = encode(event_message(event.name, event.data, event.timestamp))
            for client in self._clients.values():
                if client.session.negotiated and not client.closing:
                    client.out += data

    def _update_interest(self) -> None:
        for sock, client in list(self._clients.items()):
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.out else 0)
            if self._sel.get_key(sock).events != want:
                self._sel.modify(sock, want)

    def _drop(self, client: _Client, why: str) -> None:
        log.info("QMP client dropped: %s", why)
        self._clients.pop(client.sock, None)
        try:
            self._sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()

    def _flush_all(self) -> None:
        for client in list(self._clients.values()):
            if client.out:
                try:
                    client.sock.settimeout(FLUSH_TIMEOUT)
                    client.sock.sendall(client.out)
                except OSError:
                    pass
            self._drop(client, "the monitor closed")

"""The VNC server's socket side: listen, accept, shuttle bytes to ``RfbConnection``s.

Theory of operation
-------------------
Everything runs on the VMM's EventLoop thread: the listening socket and each
viewer's socket are readers; a timer ticks at ``rate`` Hz (30) while any
viewer is connected. Each tick reads the display's changed tiles once (the
KVM dirty log of the framebuffer slot, which reading clears), ORs them into
every connection's own dirty map, and lets each connection that asked for an
update send one. So a viewer gets at most ``rate`` updates a second and an
idle screen costs one dirty-log read per tick. When encoding is expensive
(a guest redrawing the whole screen all the time) the next tick waits four
times the CPU the last one took: the server takes at most about a quarter
of a core, sending fewer, larger updates.

Sockets are non-blocking and the loop has no writers: what a send could not
take waits in the connection's buffer and goes out on the next tick; no new
update is made for a viewer while its buffer is not empty (a slow viewer
gets fewer, larger updates, and memory stays bounded by one update).

Key events become PC key numbers (keymap.py; QEMU's extended key event
carries them directly) for ``on_key``; pointer events go to ``on_pointer``.
A viewer whose ClientInit asks for exclusive access (shared flag 0)
disconnects the others (RFC 6143 §7.3.1). At most ``MAX_VIEWERS`` at once.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from kvmlite.config.vnc import VncAddress
from kvmlite.errors import ConfigError
from kvmlite.vnc import rfb
from kvmlite.vnc.auth import AuthThrottle
from kvmlite.vnc.encodings import TILE, Surface
from kvmlite.vnc.keymap import keysym_to_key, qemu_keycode_to_key

log = logging.getLogger(__name__)

MAX_VIEWERS = 16
UPDATE_RATE_HZ = 30.0
RECV_SIZE = 65536
#: A tick's CPU time times this is the least time to the next tick.
CPU_SHARE_INVERSE = 4.0


class Display(Protocol):
    width: int
    height: int
    stride: int
    buf: memoryview

    def changed_tiles(self, tile: int = ...) -> bytearray: ...


class Loop(Protocol):
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None: ...
    def remove_reader(self, fd: int) -> None: ...
    def call_later(self, delay: float, callback: Callable[[], None]) -> object: ...


@dataclass(eq=False)
class _Viewer:
    sock: socket.socket
    conn: rfb.RfbConnection
    out: bytearray = field(default_factory=bytearray)
    closing: bool = False


class VncServer:
    """Serves ``display`` to VNC viewers on ``address``."""

    def __init__(
        self,
        loop: Loop,
        display: Display,
        address: VncAddress,
        *,
        password: bytes | None = None,
        on_key: Callable[[int, bool], None] = lambda key, down: None,
        on_pointer: Callable[[int, int, int], None] | None = None,
        name: str = "kvmlite",
        clock: Callable[[], float] = time.monotonic,
        rate: float = UPDATE_RATE_HZ,
    ) -> None:
        self._loop, self.display, self.address = loop, display, address
        self._password = password
        self._throttle = AuthThrottle(clock)
        self._on_key, self._on_pointer = on_key, on_pointer
        self.name = name
        self._period = 1.0 / rate
        self._viewers: dict[int, _Viewer] = {}
        self._ticking = False
        self._closed = False
        self._listener = self._listen(address)
        self.port = self._listener.getsockname()[1] if address.path is None else None
        loop.add_reader(self._listener.fileno(), self._accept)

    @staticmethod
    def _listen(address: VncAddress) -> socket.socket:
        try:
            if address.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                if os.path.exists(address.path) and not os.path.isdir(address.path):
                    os.unlink(address.path)  # a stale socket of an earlier run
                sock.bind(address.path)
            else:
                family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address.host, address.port))
            sock.listen(8)
            sock.setblocking(False)
        except OSError as e:
            raise ConfigError(f"VNC: cannot listen on {address}: {e.strerror or e}") from e
        return sock

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def _accept(self) -> None:
        try:
            sock, peer = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if len(self._viewers) >= MAX_VIEWERS:
            log.warning("VNC: %d viewers already; refusing %s", MAX_VIEWERS, peer)
            sock.close()
            return
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        d = self.display
        conn = rfb.RfbConnection(
            d.width,
            d.height,
            self.name,
            password=self._password,
            throttle=self._throttle,
            peer=str(peer) if peer else "unix viewer",
        )
        viewer = _Viewer(sock, conn)
        self._viewers[sock.fileno()] = viewer
        self._loop.add_reader(sock.fileno(), lambda: self._readable(viewer))
        log.info("VNC: viewer %s connected", conn.peer)
        self._flush(viewer)
        self._start_ticking()

    def _readable(self, viewer: _Viewer) -> None:
        try:
            data = viewer.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.info("VNC: viewer %s: %s", viewer.conn.peer, e)
            data = b""
        if not data:
            self._drop(viewer)
            return
        self._handle(viewer, viewer.conn.receive_data(data))
        self._flush(viewer)

    def _handle(self, viewer: _Viewer, events: list[rfb.Event]) -> None:
        for event in events:
            if isinstance(event, rfb.KeyEvent):
                key = (
                    qemu_keycode_to_key(event.keycode)
                    if event.keycode is not None
                    else keysym_to_key(event.keysym)
                )
                if key is not None:
                    self._on_key(key, event.down)
            elif isinstance(event, rfb.PointerEvent):
                if self._on_pointer is not None:
                    self._on_pointer(event.x, event.y, event.buttons)
            elif isinstance(event, rfb.ClientInit) and not event.shared:
                for other in list(self._viewers.values()):
                    if other is not viewer:
                        other.conn.close("another viewer asked for exclusive access")
                        self._drop(other)
            elif isinstance(event, rfb.Closed):
                viewer.closing = True

    def _flush(self, viewer: _Viewer) -> None:
        viewer.out += viewer.conn.data_to_send()
        if viewer.out:
            try:
                sent = viewer.sock.send(viewer.out)
                del viewer.out[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                log.info("VNC: viewer %s: %s", viewer.conn.peer, e)
                self._drop(viewer)
                return
        if viewer.closing:  # one try at the last words (a failure reason), then go
            self._drop(viewer)

    def _drop(self, viewer: _Viewer) -> None:
        fd = viewer.sock.fileno()
        if self._viewers.get(fd) is not viewer:
            return
        del self._viewers[fd]
        self._loop.remove_reader(fd)
        viewer.sock.close()
        log.info("VNC: viewer %s disconnected", viewer.conn.peer)

    # -- updates -----------------------------------------------------------------

    def _start_ticking(self, busy: float = 0.0) -> None:
        if not self._ticking and not self._closed:
            self._ticking = True
            self._loop.call_later(max(self._period, busy), self._tick)

    def _tick(self) -> None:
        self._ticking = False
        if self._closed or not self._viewers:
            return
        started = time.thread_time()
        tiles = self.display.changed_tiles(TILE)
        surface = Surface(
            self.display.buf, self.display.width, self.display.height, self.display.stride
        )
        for viewer in list(self._viewers.values()):
            conn = viewer.conn
            self._handle(viewer, conn.poll())
            if any(tiles):
                conn.mark_tiles(tiles)
            if not viewer.out and conn.wants_update:
                conn.send_update(surface)
            self._flush(viewer)
        # Encoding is the cost: the next tick waits at least CPU_SHARE_INVERSE
        # times what this one took, so the server uses at most about 1/4 of a
        # core however fast the guest redraws (fewer, larger updates instead).
        self._start_ticking(CPU_SHARE_INVERSE * (time.thread_time() - started))

    def resize(self) -> None:
        """The display changed size: every viewer hears of it (DesktopSize)."""
        for viewer in self._viewers.values():
            viewer.conn.resize(self.display.width, self.display.height)

    def close(self) -> None:
        self._closed = True
        for viewer in list(self._viewers.values()):
            self._drop(viewer)
        self._loop.remove_reader(self._listener.fileno())
        self._listener.close()
        if self.address.path is not None:
            try:
                os.unlink(self.address.path)
            except FileNotFoundError:
                pass

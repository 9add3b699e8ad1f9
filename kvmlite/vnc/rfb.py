"""RFB server protocol core (RFC 6143), sans-IO: bytes in, bytes and events out.

One ``RfbConnection`` per viewer. ``receive_data(bytes)`` parses what the
viewer sent and returns events (key, pointer, cut text, ClientInit's shared
flag, ``Closed``); ``data_to_send()`` hands over the bytes to write. Nothing
here touches a socket or a clock of its own (like h11), so the tests drive it
through a fake link and an injected clock.

Theory of operation
-------------------
Handshake (§7.1-7.3): ProtocolVersion 3.8 is offered; a viewer answering
3.7 or 3.8 gets that, anything else from 3.x is treated as 3.3 (§7.1.1).
Security is None, or VNC Authentication when a password is set (auth.py);
SecurityResult is sent as each version wants it (none for None before 3.8,
a reason string only in 3.8). A wrong password's answer is held back by the
server's ``AuthThrottle``: ``next_deadline()`` says when to call ``poll()``.
Then ClientInit (the shared flag becomes a ``ClientInit`` event) and
ServerInit (size, ``SOURCE_FORMAT``, name).

Updates: the framebuffer is cut into 64x64 tiles; each connection keeps its
own dirty bit per tile (``mark_dirty``, fed from the display's dirty log).
A FramebufferUpdateRequest makes the connection "wanting"; a non-incremental
one also marks its area dirty. ``send_update(surface)`` then sends the dirty
tiles inside the requested area, as horizontal runs of tiles, in the first
encoding of the viewer's list that we have (ZRLE or Raw, Raw by default),
preceded by the pseudo-rectangles due (QEMU extended key event ack,
DesktopSize after ``resize``). An incremental request with nothing dirty
stays pending until something changes.

Hostile input (DESIGN.md rule 6): an unknown message type, a bad version
string, a security type not offered, an unusable pixel format, a QEMU
sub-message other than the extended key event, or a cut text longer than
``CUT_TEXT_LIMIT`` closes the connection with a log line and a ``Closed``
event. Unknown encodings in SetEncodings are ignored (§7.5.2 says a viewer
may list encodings the server does not know); requested rectangles and
pointer positions are clipped to the framebuffer (a request racing a
resize is legal).
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from kvmlite.vnc import encodings as enc
from kvmlite.vnc.auth import CHALLENGE_SIZE, AuthThrottle, check_response
from kvmlite.vnc.pixels import SOURCE_FORMAT, PixelConverter, PixelFormat, PixelFormatError

log = logging.getLogger(__name__)

SECURITY_NONE = 1
SECURITY_VNC_AUTH = 2
MSG_SET_PIXEL_FORMAT = 0
MSG_SET_ENCODINGS = 2
MSG_FRAMEBUFFER_UPDATE_REQUEST = 3
MSG_KEY_EVENT = 4
MSG_POINTER_EVENT = 5
MSG_CLIENT_CUT_TEXT = 6
MSG_QEMU = 255
QEMU_EXTENDED_KEY_EVENT = 0
SERVER_FRAMEBUFFER_UPDATE = 0
SERVER_BELL = 2
SERVER_CUT_TEXT = 3
#: A viewer's clipboard text beyond this closes the connection.
CUT_TEXT_LIMIT = 1 << 20
VERSION_RE = re.compile(rb"RFB (\d{3})\.(\d{3})\n")
_FIXED_LENGTH = {
    MSG_SET_PIXEL_FORMAT: 20,
    MSG_FRAMEBUFFER_UPDATE_REQUEST: 10,
    MSG_KEY_EVENT: 8,
    MSG_POINTER_EVENT: 6,
}


@dataclass(frozen=True)
class ClientInit:
    shared: bool


@dataclass(frozen=True)
class KeyEvent:
    down: bool
    keysym: int
    keycode: int | None = None  # QEMU extended key event: XT code, 0x80 bit for 0xE0 keys


@dataclass(frozen=True)
class PointerEvent:
    buttons: int
    x: int
    y: int


@dataclass(frozen=True)
class CutText:
    text: bytes  # ISO 8859-1


@dataclass(frozen=True)
class Closed:
    reason: str


Event = ClientInit | KeyEvent | PointerEvent | CutText | Closed


class ProtocolError(Exception):
    pass


class RfbConnection:
    """The server side of one RFB connection."""

    def __init__(
        self,
        width: int,
        height: int,
        name: str = "kvmlite",
        *,
        password: bytes | None = None,
        throttle: AuthThrottle | None = None,
        random: Callable[[int], bytes] = os.urandom,
        peer: str = "viewer",
    ) -> None:
        if password is not None and throttle is None:
            raise ValueError("a password needs an AuthThrottle")
        self.width, self.height = width, height
        self.name = name
        self.peer = peer
        self._password = password
        self._throttle = throttle
        self._random = random
        self._in = bytearray()
        self._out = bytearray(b"RFB 003.008\n")
        self._state = "version"
        self.version = (3, 8)
        self._challenge = b""
        self._deadline: float | None = None
        self.closed: str | None = None
        self.ready = False  # past ServerInit
        self.shared = True
        self.format = SOURCE_FORMAT
        self._conv = PixelConverter(SOURCE_FORMAT)
        self.encodings: tuple[int, ...] = ()
        self._zrle = enc.ZrleEncoder()
        self._want: tuple[int, int, int, int] | None = None
        self._force = False
        self._key_ack = False
        self._resized = False
        self._copies: list[bytes] = []
        self._tiles_w = self._tiles_h = 0
        self._dirty = bytearray()
        self._size_tiles()

    # -- output --------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    # -- input ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        if self.closed is not None:
            return []
        self._in += data
        events: list[Event] = []
        try:
            while self.closed is None and self._step(events):
                pass
        except ProtocolError as e:
            events.append(self._close(str(e)))
        return events

    def next_deadline(self) -> float | None:
        """Clock time at which ``poll()`` has something to do (a held-back auth failure)."""
        return self._deadline

    def poll(self) -> list[Event]:
        if self._deadline is None or self._throttle is None:
            return []
        if self._throttle.clock() < self._deadline:
            return []
        self._deadline = None
        self._security_result(False, "authentication failed")
        return [self._close("wrong password")]

    def close(self, reason: str) -> Closed:
        """Close from the server's side (e.g. another viewer asked for exclusive access)."""
        return self._close(reason)

    def _close(self, reason: str) -> Closed:
        if self.closed is None:
            self.closed = reason
            log.warning("VNC %s: %s; connection dropped", self.peer, reason)
        return Closed(reason)

    def _take(self, n: int) -> bytes | None:
        if len(self._in) < n:
            return None
        data = bytes(self._in[:n])
        del self._in[:n]
        return data

    def _step(self, events: list[Event]) -> bool:
        """Handle one unit of input if it is all there; False when more is needed."""
        handler = getattr(self, f"_on_{self._state}")
        return handler(events)

    def _on_version(self, events: list[Event]) -> bool:
        data = self._take(12)
        if data is None:
            return False
        m = VERSION_RE.fullmatch(data)
        if m is None or int(m.group(1)) != 3:
            raise ProtocolError(f"bad ProtocolVersion {data!r}")
        minor = int(m.group(2))
        self.version = (3, 8) if minor >= 8 else (3, 7) if minor == 7 else (3, 3)
        kind = SECURITY_VNC_AUTH if self._password is not None else SECURITY_NONE
        if self.version == (3, 3):
            self._out += struct.pack("!I", kind)
            self._begin_security(kind)
        else:
            self._out += bytes((1, kind))
            self._state = "security"
        return True

    def _on_security(self, events: list[Event]) -> bool:
        data = self._take(1)
        if data is None:
            return False
        offered = SECURITY_VNC_AUTH if self._password is not None else SECURITY_NONE
        if data[0] != offered:
            if self.version == (3, 8):
                self._security_result(False, f"security type {data[0]} was not offered")
            raise ProtocolError(f"security type {data[0]} was not offered")
        self._begin_security(offered)
        return True

    def _begin_security(self, kind: int) -> None:
        if kind == SECURITY_NONE:
            if self.version == (3, 8):
                self._security_result(True)
            self._state = "client_init"
        else:
            self._challenge = self._random(CHALLENGE_SIZE)
            self._out += self._challenge
            self._state = "auth_response"

    def _on_auth_response(self, events: list[Event]) -> bool:
        response = self._take(CHALLENGE_SIZE)
        if response is None:
            return False
        assert self._throttle is not None and self._password is not None
        ok = self._throttle.allowed() and check_response(self._password, self._challenge, response)
        if ok:
            self._throttle.success()
            self._security_result(True)
            self._state = "client_init"
            return True
        delay = self._throttle.failure()
        self._deadline = self._throttle.clock() + delay
        self._state = "auth_wait"
        log.warning("VNC %s: wrong password; answering in %.1f s", self.peer, delay)
        return True

    def _on_auth_wait(self, events: list[Event]) -> bool:
        self._in.clear()  # nothing a viewer sends now counts
        return False

    def _security_result(self, ok: bool, reason: str = "") -> None:
        self._out += struct.pack("!I", 0 if ok else 1)
        if not ok and self.version == (3, 8):
            text = reason.encode()
            self._out += struct.pack("!I", len(text)) + text

    def _on_client_init(self, events: list[Event]) -> bool:
        data = self._take(1)
        if data is None:
            return False
        self.shared = bool(data[0])
        name = self.name.encode()
        self._out += struct.pack("!HH", self.width, self.height) + SOURCE_FORMAT.pack()
        self._out += struct.pack("!I", len(name)) + name
        self._state = "normal"
        self.ready = True
        events.append(ClientInit(self.shared))
        return True

    def _on_normal(self, events: list[Event]) -> bool:
        if not self._in:
            return False
        kind = self._in[0]
        if kind in _FIXED_LENGTH:
            data = self._take(_FIXED_LENGTH[kind])
            if data is None:
                return False
            self._fixed_message(kind, data, events)
            return True
        if kind == MSG_SET_ENCODINGS:
            return self._set_encodings()
        if kind == MSG_CLIENT_CUT_TEXT:
            return self._cut_text(events)
        if kind == MSG_QEMU:
            return self._qemu_message(events)
        raise ProtocolError(f"unknown client message type {kind}")

    def _fixed_message(self, kind: int, data: bytes, events: list[Event]) -> None:
        if kind == MSG_SET_PIXEL_FORMAT:
            fmt = PixelFormat.unpack(data[4:20])
            try:
                self._conv = PixelConverter(fmt)
            except PixelFormatError as e:
                raise ProtocolError(f"SetPixelFormat: {e}") from None
            self.format = fmt
        elif kind == MSG_FRAMEBUFFER_UPDATE_REQUEST:
            incremental, x, y, w, h = struct.unpack("!BHHHH", data[1:])
            self._request(bool(incremental), x, y, w, h)
        elif kind == MSG_KEY_EVENT:
            down, keysym = struct.unpack("!BxxI", data[1:])
            events.append(KeyEvent(bool(down), keysym))
        elif kind == MSG_POINTER_EVENT:
            buttons, x, y = struct.unpack("!BHH", data[1:])
            x, y = min(x, self.width - 1), min(y, self.height - 1)
            events.append(PointerEvent(buttons, max(x, 0), max(y, 0)))

    def _set_encodings(self) -> bool:
        if len(self._in) < 4:
            return False
        (count,) = struct.unpack("!H", self._in[2:4])
        data = self._take(4 + 4 * count)
        if data is None:
            return False
        had_key = enc.ENCODING_QEMU_EXTENDED_KEY in self.encodings
        self.encodings = struct.unpack(f"!{count}i", data[4:])
        if enc.ENCODING_QEMU_EXTENDED_KEY in self.encodings and not had_key:
            self._key_ack = True
        return True

    def _cut_text(self, events: list[Event]) -> bool:
        if len(self._in) < 8:
            return False
        (length,) = struct.unpack("!I", self._in[4:8])
        if length > CUT_TEXT_LIMIT:
            raise ProtocolError(f"cut text of {length} bytes (limit {CUT_TEXT_LIMIT})")
        data = self._take(8 + length)
        if data is None:
            return False
        events.append(CutText(data[8:]))
        return True

    def _qemu_message(self, events: list[Event]) -> bool:
        if len(self._in) < 2:
            return False
        if self._in[1] != QEMU_EXTENDED_KEY_EVENT:
            raise ProtocolError(f"unknown QEMU client message {self._in[1]}")
        data = self._take(12)
        if data is None:
            return False
        down, keysym, keycode = struct.unpack("!HII", data[2:])
        events.append(KeyEvent(bool(down), keysym, keycode))
        return True

    # -- updates ---------------------------------------------------------------------

    def _size_tiles(self) -> None:
        self._tiles_w = -(-self.width // enc.TILE)
        self._tiles_h = -(-self.height // enc.TILE)
        self._dirty = bytearray(b"\x01" * (self._tiles_w * self._tiles_h))

    def _request(self, incremental: bool, x: int, y: int, w: int, h: int) -> None:
        x, y = min(x, self.width), min(y, self.height)
        w, h = min(w, self.width - x), min(h, self.height - y)
        if self._want is None:
            self._want = (x, y, x + w, y + h)
        else:  # two requests before an update: serve their union
            a = self._want
            self._want = (min(a[0], x), min(a[1], y), max(a[2], x + w), max(a[3], y + h))
        if not incremental:
            self._force = True
            self.mark_dirty(x, y, w, h)

    @property
    def wants_update(self) -> bool:
        return self.ready and self.closed is None and self._want is not None

    def mark_dirty(self, x: int, y: int, w: int, h: int) -> None:
        """Mark the tiles that [x, x+w) x [y, y+h) touches as changed."""
        if w <= 0 or h <= 0:
            return
        t = enc.TILE
        x0, y0 = max(x // t, 0), max(y // t, 0)
        x1 = min(-(-(x + w) // t), self._tiles_w)
        y1 = min(-(-(y + h) // t), self._tiles_h)
        for ty in range(y0, y1):
            row = ty * self._tiles_w
            self._dirty[row + x0 : row + x1] = b"\x01" * max(x1 - x0, 0)

    def mark_tiles(self, dirty: bytes | bytearray) -> None:
        """OR in a tile bitmap (one byte per tile, row-major) from the display."""
        if len(dirty) == len(self._dirty):
            self._dirty = bytearray(a | b for a, b in zip(self._dirty, dirty, strict=True))

    def resize(self, width: int, height: int) -> None:
        """The framebuffer changed size: DesktopSize if the viewer knows it, then a full update."""
        self.width, self.height = width, height
        self._size_tiles()
        self._resized = True
        self._copies.clear()

    def copy(self, src_x: int, src_y: int, x: int, y: int, w: int, h: int) -> None:
        """The area at (src_x, src_y) now also shows at (x, y): CopyRect, or dirty tiles."""
        if enc.ENCODING_COPYRECT in self.encodings and self.ready:
            self._copies.append(enc.copy_rect(src_x, src_y, x, y, w, h))
        else:
            self.mark_dirty(x, y, w, h)

    def send_update(self, surface: enc.Surface) -> bool:
        """Send a FramebufferUpdate if one is wanted and anything is due; True if sent."""
        if not self.wants_update:
            return False
        rects: list[bytes] = []
        if self._key_ack:
            rects.append(enc.RECT_HEADER.pack(0, 0, 0, 0, enc.ENCODING_QEMU_EXTENDED_KEY))
            self._key_ack = False
        if self._resized and enc.ENCODING_DESKTOP_SIZE in self.encodings:
            rects.append(enc.RECT_HEADER.pack(0, 0, self.width, self.height, -223))
            self._want = (0, 0, self.width, self.height)
        self._resized = False
        rects += self._copies
        self._copies.clear()
        rects += self._dirty_rects(surface)
        if not rects and not self._force:
            return False
        self._out += struct.pack("!BxH", SERVER_FRAMEBUFFER_UPDATE, len(rects))
        self._out += b"".join(rects)
        self._want = None
        self._force = False
        return True

    def _encoder(self) -> Callable[..., bytes]:
        for e in self.encodings:
            if e == enc.ENCODING_ZRLE:
                return self._zrle.rect
            if e == enc.ENCODING_RAW:
                break
        return enc.raw_rect

    def _dirty_rects(self, surface: enc.Surface) -> list[bytes]:
        assert self._want is not None
        t, encode = enc.TILE, self._encoder()
        wx0, wy0, wx1, wy1 = self._want
        if wx1 <= wx0 or wy1 <= wy0:
            return []
        tx0, ty0 = wx0 // t, wy0 // t
        tx1, ty1 = -(-wx1 // t), -(-wy1 // t)
        out = []
        for ty in range(ty0, ty1):
            row = ty * self._tiles_w
            tx = tx0
            while tx < tx1:
                if not self._dirty[row + tx]:
                    tx += 1
                    continue
                start = tx
                while tx < tx1 and self._dirty[row + tx]:
                    self._dirty[row + tx] = 0
                    tx += 1
                x, y = start * t, ty * t
                w, h = min(tx * t, self.width) - x, min(y + t, self.height) - y
                out.append(encode(surface, self._conv, x, y, w, h))
        return out

    def send_cut_text(self, text: bytes) -> None:
        if self.ready and self.closed is None:
            self._out += struct.pack("!BxxxI", SERVER_CUT_TEXT, len(text)) + text

    def bell(self) -> None:
        if self.ready and self.closed is None:
            self._out += bytes((SERVER_BELL,))

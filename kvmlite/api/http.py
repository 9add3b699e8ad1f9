"""A small HTTP/1.1 request parser and response writer, sans I/O (RFC 9112).

Theory of operation
-------------------
``RequestParser.feed(data)`` takes whatever bytes the socket gave and
``next_event()`` hands back, in order, ``NEED_DATA``, ``CONTINUE`` (the client
sent ``Expect: 100-continue`` and waits for a ``100 Continue`` before its
body) or a complete ``Request``. Errors raise ``HttpError`` with the status
to answer; after one the connection is closed, since the parser no longer
knows where the next request starts.

Only what Firecracker's API clients use: requests with a ``Content-Length``
body (chunked bodies are refused with 400, as Firecracker's micro_http does),
persistent connections (HTTP/1.1 keeps the connection unless ``Connection:
close``; HTTP/1.0 closes it unless ``Connection: keep-alive``), several
requests in one read (pipelining). The head is capped at ``MAX_HEAD`` bytes
and the body at ``max_body`` (Firecracker's default payload limit is 51200
bytes); a larger ``Content-Length`` is refused before any of its body is read.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

MAX_HEAD = 8192
DEFAULT_MAX_BODY = 51200
_METHODS = {"GET", "PUT", "PATCH", "POST", "DELETE", "HEAD", "OPTIONS"}
REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Event(enum.Enum):
    NEED_DATA = "need data"
    CONTINUE = "100-continue"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    keep_alive: bool = True


class RequestParser:
    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_body = max_body
        self._buf = bytearray()
        self._head: tuple[str, str, dict[str, str], bool, int] | None = None
        self._continue_sent = False

    @property
    def idle(self) -> bool:
        """No partial request is buffered (a close now loses nothing)."""
        return not self._buf and self._head is None

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_event(self) -> Request | Event:
        if self._head is None:
            # Stray CRLFs between requests are allowed (RFC 9112 §2.2).
            while self._buf[:2] == b"\r\n":
                del self._buf[:2]
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    raise HttpError(400, f"request head is longer than {MAX_HEAD} bytes")
                return Event.NEED_DATA
            if end > MAX_HEAD:
                raise HttpError(400, f"request head is longer than {MAX_HEAD} bytes")
            head = bytes(self._buf[:end])
            del self._buf[: end + 4]
            self._head = self._parse_head(head)
            self._continue_sent = False
        method, path, headers, keep_alive, length = self._head
        if len(self._buf) < length:
            if headers.get("expect", "").lower() == "100-continue" and not self._continue_sent:
                self._continue_sent = True
                return Event.CONTINUE
            return Event.NEED_DATA
        body = bytes(self._buf[:length])
        del self._buf[:length]
        self._head = None
        return Request(method, path, headers, body, keep_alive)

    def _parse_head(self, head: bytes) -> tuple[str, str, dict[str, str], bool, int]:
        try:
            text = head.decode("ascii")
        except UnicodeDecodeError:
            raise HttpError(400, "request head is not ASCII") from None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise HttpError(400, f"malformed request line {lines[0][:80]!r}")
        method, target, version = parts
        if method not in _METHODS:
            raise HttpError(400, f"unsupported HTTP method {method[:20]!r}")
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise HttpError(400, f"unsupported HTTP version {version[:20]!r}")
        if not target.startswith("/"):
            raise HttpError(400, f"request target {target[:80]!r} must be a path")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or not name.isascii():
                raise HttpError(400, f"malformed header line {line[:80]!r}")
            key = name.lower()
            value = value.strip()
            if key == "content-length" and key in headers and headers[key] != value:
                raise HttpError(400, "conflicting Content-Length headers")
            headers[key] = value
        if "transfer-encoding" in headers:
            raise HttpError(400, "chunked (Transfer-Encoding) bodies are not supported")
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit() or len(length_text) > 18:
            raise HttpError(400, f"bad Content-Length {length_text[:20]!r}")
        length = int(length_text)
        if length > self.max_body:
            raise HttpError(
                400,
                f"Request payload with size {length} is larger than the limit of "
                f"{self.max_body} allowed by server.",
            )
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep_alive = connection != "close"
        else:
            keep_alive = connection == "keep-alive"
        return method, target, headers, keep_alive, length


def continue_response() -> bytes:
    return b"HTTP/1.1 100 Continue\r\n\r\n"


def response(status: int, body: Any = None, *, keep_alive: bool = True) -> bytes:
    """A response; ``body`` (if not None) is sent as JSON. 204 has no body and no
    Content-Length (RFC 9110 §8.6), but names the API's media type like the others."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}", "Server: kvmlite"]
    lines.append("Content-Type: application/json")
    payload = b""
    if status != 204:
        if body is not None:
            payload = json.dumps(body).encode()
        lines.append(f"Content-Length: {len(payload)}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

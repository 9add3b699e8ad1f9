"""The QMP wire protocol, sans-IO: bytes in, JSON messages out.

Follows QEMU's docs/interop/qmp-spec.rst: on connection the server sends a
greeting (``{"QMP": {"version": ..., "capabilities": [...]}}``); the client
is in capabilities-negotiation mode until it executes ``qmp_capabilities``
(every other command gets ``CommandNotFound`` there, and no events are
sent); then commands ``{"execute": NAME, "arguments": {...}, "id": ANY}``
get ``{"return": ...}`` or ``{"error": {"class": C, "desc": D}}``, with the
``id`` echoed, and asynchronous events ``{"event": NAME, "data": {...},
"timestamp": {"seconds": S, "microseconds": U}}`` interleave.

Theory of operation
-------------------
``QmpParser`` splits the byte stream into JSON values with
``json.JSONDecoder.raw_decode``: clients need not end a message with a
newline (qemu.qmp does not), so a value is taken as soon as it is
complete. A decode error at the end of the buffer (an unfinished object,
string or literal) means "wait for more"; any other is a JSON parse error,
answered with ``GenericError``, after which the parser skips to the next
newline (or drops what it has). Input is capped (``MAX_MESSAGE``): a
message that grows beyond it, or bytes that are not UTF-8, end the session
(``QmpProtocolError``): there is no way to find where the next message
starts.

``QmpSession`` holds one client's negotiation state and turns each parsed
value into a response through ``dispatch`` (the command table of
qmp_commands.py); it never does I/O and never touches the VM itself.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kvmlite import __version__

log = logging.getLogger(__name__)

#: Largest accepted message, in bytes (QEMU's own limit is far higher; a
#: management client never sends more than a few KiB).
MAX_MESSAGE = 1 << 20

GENERIC_ERROR = "GenericError"
COMMAND_NOT_FOUND = "CommandNotFound"

_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")
_WS = " \t\r\n"


class QmpError(Exception):
    """A command's error: ``cls`` is a QAPI error class, ``desc`` the message."""

    def __init__(self, cls: str, desc: str) -> None:
        super().__init__(desc)
        self.cls = cls
        self.desc = desc


class QmpProtocolError(Exception):
    """The client's byte stream cannot be read on: the session must end."""


class JsonParseError:
    """A value the parser could not decode (answered, then skipped)."""

    def __init__(self, desc: str) -> None:
        self.desc = desc


def version_info() -> dict[str, Any]:
    """``VersionInfo`` (QAPI): kvmlite's own version, and its name as the package."""
    nums = [int(p) if p.isdigit() else 0 for p in __version__.split(".")[:3]]
    major, minor, micro = (nums + [0, 0, 0])[:3]
    return {
        "qemu": {"major": major, "minor": minor, "micro": micro},
        "package": f"kvmlite {__version__}",
    }


def greeting() -> dict[str, Any]:
    # No capabilities: kvmlite has no out-of-band execution ("oob").
    return {"QMP": {"version": version_info(), "capabilities": []}}


def event_message(name: str, data: Mapping[str, Any], timestamp: float) -> dict[str, Any]:
    seconds = int(timestamp)
    msg: dict[str, Any] = {
        "event": name,
        "timestamp": {"seconds": seconds, "microseconds": int((timestamp - seconds) * 1e6)},
    }
    if data:
        msg["data"] = dict(data)
    return msg


def _incomplete(text: str, err: json.JSONDecodeError) -> bool:
    """Whether ``err`` only says that ``text`` stops in the middle of a value."""
    if err.pos >= len(text.rstrip(_WS)):
        return True
    if err.msg.startswith("Unterminated string"):
        return True
    tail = text[err.pos :]
    if err.msg.startswith("Invalid \\uXXXX escape") and len(text) - err.pos < 6:
        return True
    return any(lit.startswith(tail) and lit != tail for lit in _LITERALS)


class QmpParser:
    """Incremental splitter of a UTF-8 byte stream into JSON values."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self._text = ""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[object]:
        """Values completed by ``data`` (``JsonParseError`` for bad ones)."""
        try:
            self._text += self._utf8.decode(data)
        except UnicodeDecodeError:
            raise QmpProtocolError("JSON parse error, invalid UTF-8 sequence") from None
        out: list[object] = []
        while True:
            text = self._text.lstrip(_WS)
            self._text = text
            if not text:
                break
            try:
                value, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError as e:
                if _incomplete(text, e):
                    break
                out.append(JsonParseError(f"JSON parse error, {e.msg}"))
                self._skip_line()
                continue
            except RecursionError:
                out.append(JsonParseError("JSON parse error, nesting too deep"))
                self._skip_line()
                continue
            if end > self.max_message:
                raise QmpProtocolError(f"QMP input exceeds {self.max_message} bytes")
            out.append(value)
            self._text = text[end:]
        if len(self._text) > self.max_message:
            raise QmpProtocolError(f"QMP input exceeds {self.max_message} bytes")
        return out

    def _skip_line(self) -> None:
        nl = self._text.find("\n")
        self._text = "" if nl < 0 else self._text[nl + 1 :]


#: A command handler: (arguments) -> the "return" value; raises QmpError.
Handler = Callable[[dict[str, Any]], Any]


def error_response(cls: str, desc: str, id: Any = None, has_id: bool = False) -> dict[str, Any]:
    msg: dict[str, Any] = {"error": {"class": cls, "desc": desc}}
    if has_id:
        msg["id"] = id
    return msg


class QmpSession:
    """One client's protocol state. ``receive(bytes)`` -> responses to send."""

    def __init__(self, commands: Mapping[str, Handler], *, max_message: int = MAX_MESSAGE) -> None:
        self.commands = commands
        self.negotiated = False
        self._parser = QmpParser(max_message)

    def receive(self, data: bytes) -> list[dict[str, Any]]:
        """Parse ``data`` and run every complete command (raises QmpProtocolError)."""
        return [self.handle(value) for value in self._parser.feed(data)]

    def handle(self, value: object) -> dict[str, Any]:
        if isinstance(value, JsonParseError):
            return error_response(GENERIC_ERROR, value.desc)
        if not isinstance(value, dict):
            return error_response(GENERIC_ERROR, "QMP input must be a JSON object")
        has_id = "id" in value
        id = value.get("id")
        try:
            name, args = self._check(value)
            result = self._execute(name, args)
        except QmpError as e:
            return error_response(e.cls, e.desc, id, has_id)
        except Exception as e:  # a bug in a handler must not end the monitor
            log.exception("QMP command failed")
            return error_response(GENERIC_ERROR, f"internal error: {e}", id, has_id)
        msg: dict[str, Any] = {"return": result}
        if has_id:
            msg["id"] = id
        return msg

    @staticmethod
    def _check(value: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        for key in value:
            if key not in ("execute", "arguments", "id", "exec-oob"):
                raise QmpError(GENERIC_ERROR, f"QMP input member '{key}' is unexpected")
        if "exec-oob" in value:
            raise QmpError(GENERIC_ERROR, "QMP input member 'exec-oob' is unexpected")
        if "execute" not in value:
            raise QmpError(GENERIC_ERROR, "QMP input lacks member 'execute'")
        name = value["execute"]
        if not isinstance(name, str):
            raise QmpError(GENERIC_ERROR, "QMP input member 'execute' must be a string")
        args = value.get("arguments", {})
        if not isinstance(args, dict):
            raise QmpError(GENERIC_ERROR, "QMP input member 'arguments' must be an object")
        return name, args

    def _execute(self, name: str, args: dict[str, Any]) -> Any:
        if name == "qmp_capabilities":
            if self.negotiated:
                raise QmpError(
                    COMMAND_NOT_FOUND, "Capabilities negotiation is already complete, command "
                    "qmp_capabilities ignored"
                )  # fmt: skip
            _check_args(args, {"enable"})
            enable = args.get("enable", [])
            if not isinstance(enable, list):
                raise QmpError(GENERIC_ERROR, "Parameter 'enable' expects an array")
            for cap in enable:
                raise QmpError(GENERIC_ERROR, f"Capability '{cap}' not available")
            self.negotiated = True
            return {}
        if not self.negotiated:
            raise QmpError(
                COMMAND_NOT_FOUND,
                "Expecting capabilities negotiation with 'qmp_capabilities'",
            )
        handler = self.commands.get(name)
        if handler is None:
            raise QmpError(COMMAND_NOT_FOUND, f"The command {name} has not been found")
        return handler(args)


def _check_args(args: Mapping[str, Any], allowed: set[str]) -> None:
    for key in args:
        if key not in allowed:
            raise QmpError(GENERIC_ERROR, f"Parameter '{key}' is unexpected")

"""Character backends: the host side of serial ports and consoles.

Open one with ``open_char(CharConfig.parse("stdio" | "file:PATH" | "unix:PATH"
| "pty" | "null"))`` (``kvmlite.config.char``); the interface every backend has
is in ``base``.
"""

from kvmlite.backends.char.base import CharBackend
from kvmlite.backends.char.escape import EscapeAction, EscapeParser
from kvmlite.backends.char.file import FileBackend
from kvmlite.backends.char.null import NullBackend
from kvmlite.backends.char.pty_backend import PtyBackend
from kvmlite.backends.char.pump import InputPump, InputSink
from kvmlite.backends.char.spec import open_char, parse_console_spec
from kvmlite.backends.char.stdio import StdioBackend
from kvmlite.backends.char.unix_socket import UnixSocketBackend

__all__ = [
    "CharBackend",
    "EscapeAction",
    "EscapeParser",
    "FileBackend",
    "InputPump",
    "InputSink",
    "NullBackend",
    "PtyBackend",
    "StdioBackend",
    "UnixSocketBackend",
    "open_char",
    "parse_console_spec",
]

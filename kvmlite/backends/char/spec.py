"""Parsing a console option (``--serial SPEC``) into a backend."""

from __future__ import annotations

from collections.abc import Callable

from kvmlite.backends.char.base import CharBackend
from kvmlite.backends.char.file import FileBackend
from kvmlite.backends.char.null import NullBackend
from kvmlite.backends.char.pty_backend import PtyBackend
from kvmlite.backends.char.stdio import StdioBackend
from kvmlite.backends.char.unix_socket import UnixSocketBackend
from kvmlite.errors import ConfigError

CONSOLE_SPECS = "stdio, file:PATH, file:PATH,append=on, unix:PATH, pty, null"
_APPEND_SUFFIX = ",append=on"


def parse_console_spec(
    spec: str,
    *,
    on_quit: Callable[[], None] | None = None,
    on_break: Callable[[], None] | None = None,
) -> CharBackend:
    """Build the backend ``spec`` names; ``on_quit``/``on_break``: stdio's Ctrl-A x / b."""
    kind, sep, arg = spec.partition(":")
    if kind in ("stdio", "pty", "null") and sep:
        raise ConfigError(f"console {spec!r}: {kind!r} takes no argument; use plain {kind!r}")
    if kind == "stdio":
        return StdioBackend(on_quit, on_break=on_break)
    if kind == "pty":
        return PtyBackend()
    if kind == "null":
        return NullBackend()
    if kind in ("file", "unix"):
        if not arg:
            raise ConfigError(f"console {spec!r}: {kind} needs a path, as in {kind}:/tmp/console")
        if kind == "file":
            append = arg.endswith(_APPEND_SUFFIX)
            path = arg[: -len(_APPEND_SUFFIX)] if append else arg
            if not path:
                raise ConfigError(f"console {spec!r}: file needs a path before ',append=on'")
            return FileBackend(path, append=append)
        return UnixSocketBackend(arg, server=True)
    raise ConfigError(f"unknown console {spec!r}: expected one of {CONSOLE_SPECS}")

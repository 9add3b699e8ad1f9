"""Opening a character device's host side from its ``CharConfig``."""

from __future__ import annotations

from collections.abc import Callable

from kvmlite.backends.char.base import CharBackend
from kvmlite.backends.char.file import FileBackend
from kvmlite.backends.char.null import NullBackend
from kvmlite.backends.char.pty_backend import PtyBackend
from kvmlite.backends.char.stdio import StdioBackend
from kvmlite.backends.char.unix_socket import UnixSocketBackend
from kvmlite.config.char import CONSOLE_SPECS, CharConfig, CharKind

__all__ = ["CONSOLE_SPECS", "open_char", "parse_console_spec"]


def open_char(
    config: CharConfig,
    *,
    on_quit: Callable[[], None] | None = None,
    on_break: Callable[[], None] | None = None,
) -> CharBackend:
    """Open the backend ``config`` names; ``on_quit``/``on_break``: stdio's Ctrl-A x / b."""
    if config.kind is CharKind.STDIO:
        return StdioBackend(on_quit, on_break=on_break)
    if config.kind is CharKind.PTY:
        return PtyBackend()
    if config.kind is CharKind.NULL:
        return NullBackend()
    assert config.path is not None
    if config.kind is CharKind.FILE:
        return FileBackend(str(config.path), append=config.append)
    return UnixSocketBackend(str(config.path), server=True)


def parse_console_spec(
    spec: str,
    *,
    on_quit: Callable[[], None] | None = None,
    on_break: Callable[[], None] | None = None,
) -> CharBackend:
    """Parse and open in one step (for ``kvmlite serve`` and tests)."""
    return open_char(CharConfig.parse(spec), on_quit=on_quit, on_break=on_break)

"""A character device's host side: ``stdio``, ``file:PATH``, ``unix:PATH``, ``pty``, ``null``.

Used by the serial console (COM1), the other UARTs and the virtio-console
ports. Parsing only names the backend; ``kvmlite.backends.char.open_char``
opens it, when the builder says so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from kvmlite.errors import ConfigError

CONSOLE_SPECS = "stdio, file:PATH, file:PATH,append=on, unix:PATH, pty, null"
_APPEND_SUFFIX = ",append=on"


class CharKind(enum.Enum):
    STDIO = "stdio"
    FILE = "file"
    UNIX = "unix"
    PTY = "pty"
    NULL = "null"


@dataclass(frozen=True)
class CharConfig:
    kind: CharKind = CharKind.STDIO
    path: Path | None = None
    #: ``file:PATH,append=on``: append instead of truncating.
    append: bool = False

    def __post_init__(self) -> None:
        needs_path = self.kind in (CharKind.FILE, CharKind.UNIX)
        if needs_path and not self.path:
            raise ConfigError(f"a {self.kind.value} console needs a path")
        if not needs_path and self.path is not None:
            raise ConfigError(f"a {self.kind.value} console takes no path")
        if self.append and self.kind is not CharKind.FILE:
            raise ConfigError("append=on is for file: consoles only")

    @classmethod
    def parse(cls, spec: str) -> CharConfig:
        kind_text, sep, arg = spec.partition(":")
        try:
            kind = CharKind(kind_text)
        except ValueError:
            raise ConfigError(
                f"unknown console {spec!r}: expected one of {CONSOLE_SPECS}"
            ) from None
        if kind in (CharKind.STDIO, CharKind.PTY, CharKind.NULL):
            if sep:
                raise ConfigError(
                    f"console {spec!r}: {kind_text!r} takes no argument; use plain {kind_text!r}"
                )
            return cls(kind)
        if not arg:
            raise ConfigError(
                f"console {spec!r}: {kind_text} needs a path, as in {kind_text}:/tmp/console"
            )
        append = kind is CharKind.FILE and arg.endswith(_APPEND_SUFFIX)
        path = arg[: -len(_APPEND_SUFFIX)] if append else arg
        if not path:
            raise ConfigError(f"console {spec!r}: file needs a path before ',append=on'")
        return cls(kind, Path(path), append)

    def __str__(self) -> str:
        if self.path is None:
            return self.kind.value
        return f"{self.kind.value}:{self.path}" + (_APPEND_SUFFIX if self.append else "")

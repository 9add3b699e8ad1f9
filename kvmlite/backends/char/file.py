"""Console output into a file (QEMU's ``-serial file:PATH``); no input."""

from __future__ import annotations

import os

from kvmlite.backends.char.base import CharBackend, write_all
from kvmlite.errors import ConfigError


class FileBackend(CharBackend):
    """Writes guest output to ``path``, truncating it first unless ``append``."""

    def __init__(self, path: str, append: bool = False) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
        try:
            self._fd: int | None = os.open(path, flags, 0o644)
        except OSError as e:
            raise ConfigError(
                f"cannot open console output file {path!r}: {e.strerror}; "
                "check that the directory exists and is writable"
            ) from None

    def write(self, data: bytes) -> None:
        if self._fd is not None:
            write_all(self._fd, data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

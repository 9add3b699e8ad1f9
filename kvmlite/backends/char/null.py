"""A console that discards output and never has input (QEMU's ``-serial null``)."""

from __future__ import annotations

from kvmlite.backends.char.base import CharBackend


class NullBackend(CharBackend):
    def write(self, data: bytes) -> None:
        pass

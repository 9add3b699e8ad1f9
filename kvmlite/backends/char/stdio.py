"""The user's terminal as the console (QEMU's ``-serial stdio`` / ``-nographic``).

When stdin is a terminal it is put into raw mode (see ``terminal``) and the
escape keys of ``escape`` work: Ctrl-A x quits (``on_quit``), Ctrl-A b sends
a break (``on_break``, e.g. ``Serial16550.send_break``), Ctrl-A h prints help. When
stdin is not a terminal (a pipe, a file, /dev/null) bytes pass through
untouched: no raw mode and no escape keys, so scripts can feed any bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from kvmlite.backends.char.base import CharBackend, write_all
from kvmlite.backends.char.escape import HELP_TEXT, EscapeAction, EscapeParser
from kvmlite.backends.char.terminal import TerminalMode

READ_CHUNK = 4096
MONITOR_NOTE = b"\r\n[kvmlite: there is no monitor yet; C-a h for help]\r\n"


class StdioBackend(CharBackend):
    """Guest output to ``stdout_fd``, input from ``stdin_fd``."""

    def __init__(
        self,
        on_quit: Callable[[], None] | None = None,
        *,
        on_break: Callable[[], None] | None = None,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
        signal_handlers: bool = True,
    ) -> None:
        self._in = stdin_fd
        self._out = stdout_fd
        self._on_quit = on_quit
        self._on_break = on_break
        #: Set by Ctrl-A x when no ``on_quit`` callback was given.
        self.quit_requested = False
        self._closed = False
        self.is_tty = os.isatty(stdin_fd)
        self._parser: EscapeParser | None = None
        self._mode: TerminalMode | None = None
        if self.is_tty:
            self._mode = TerminalMode(stdin_fd)
            self._mode.enter_raw(signal_handlers=signal_handlers)
            self._parser = EscapeParser()

    def write(self, data: bytes) -> None:
        write_all(self._out, data)

    def fileno(self) -> int | None:
        return self._in

    def read_available(self) -> bytes:
        if self.eof or self._closed:
            return b""
        data = os.read(self._in, READ_CHUNK)
        if not data:
            self.eof = True
            return b""
        if self._parser is None:
            return data
        data, actions = self._parser.feed(data)
        for action in actions:
            self._act(action)
        return data

    def _act(self, action: EscapeAction) -> None:
        if action is EscapeAction.HELP:
            self.write(b"\r\n" + HELP_TEXT.encode())
        elif action is EscapeAction.MONITOR:
            self.write(MONITOR_NOTE)
        elif action is EscapeAction.BREAK:
            if self._on_break is not None:
                self._on_break()
        elif action is EscapeAction.QUIT:
            if self._on_quit is not None:
                self._on_quit()
            else:
                self.quit_requested = True

    def close(self) -> None:
        if self._mode is not None:
            self._mode.restore()
        self._closed = True

"""Putting the user's terminal into raw mode and always putting it back.

Raw mode here is what QEMU's stdio backend sets (termios(3)): no line
editing, no echo, no CR/NL translation on input, no XON/XOFF and no signal
keys (Ctrl-C and Ctrl-Z go to the guest), 8-bit characters; output
post-processing (OPOST) stays on so the host side's own messages still get
CR-LF.

A terminal left raw after kvmlite ends is a broken shell for the user, so a
``TerminalMode`` is restored by ``restore()``, at interpreter exit (atexit)
and on SIGTERM/SIGHUP (the handler restores, then does what the previous
handler would have done: call it, or die by the signal). Signal handlers can
only be installed from the main thread; elsewhere that part is skipped.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import termios
import threading
from types import FrameType
from typing import Any

_active: list[TerminalMode] = []
_hooks_installed = False
_previous_handlers: dict[int, Any] = {}
RESTORE_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _restore_all() -> None:
    for mode in list(_active):
        mode.restore()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _restore_all()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_hooks(signals: bool) -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_restore_all)
    if signals and threading.current_thread() is threading.main_thread():
        for sig in RESTORE_SIGNALS:
            _previous_handlers[sig] = signal.signal(sig, _on_signal)


class TerminalMode:
    """Raw mode on a tty fd, remembered and restorable."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: list[Any] | None = None

    def enter_raw(self, *, signal_handlers: bool = True) -> None:
        saved = termios.tcgetattr(self.fd)
        raw: list[Any] = [list(x) if isinstance(x, list) else x for x in saved]
        iflag, oflag, cflag, lflag, _, _, cc = range(7)
        raw[iflag] &= ~(
            termios.IGNBRK
            | termios.BRKINT
            | termios.PARMRK
            | termios.ISTRIP
            | termios.INLCR
            | termios.IGNCR
            | termios.ICRNL
            | termios.IXON
        )
        raw[oflag] |= termios.OPOST
        raw[lflag] &= ~(
            termios.ECHO | termios.ECHONL | termios.ICANON | termios.IEXTEN | termios.ISIG
        )
        raw[cflag] = (raw[cflag] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
        raw[cc][termios.VMIN] = 1
        raw[cc][termios.VTIME] = 0
        self._saved = saved
        _install_hooks(signal_handlers)
        _active.append(self)
        termios.tcsetattr(self.fd, termios.TCSANOW, raw)

    def restore(self) -> None:
        if self._saved is None:
            return
        saved, self._saved = self._saved, None
        with contextlib.suppress(ValueError):
            _active.remove(self)
        # The tty may be gone already (a hung-up terminal): nothing to restore then.
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)

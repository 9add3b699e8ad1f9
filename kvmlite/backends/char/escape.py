"""The console escape keys, as a pure state machine (QEMU's ``-nographic`` mux keys).

``Ctrl-A`` starts an escape; the next byte says what to do:

=============  ==========================================================
Ctrl-A x       quit kvmlite
Ctrl-A c       reserved for the monitor (not there yet: prints a note)
Ctrl-A h       print help
Ctrl-A b       send a break (Linux: the next key is a Magic SysRq command)
Ctrl-A Ctrl-A  send one Ctrl-A to the guest
=============  ==========================================================

Any other byte after Ctrl-A is dropped together with the Ctrl-A. The state
(an escape started but not finished) carries over between ``feed`` calls,
as a terminal delivers keys one read at a time.
"""

from __future__ import annotations

import enum

ESCAPE_CHAR = 0x01  # Ctrl-A


class EscapeAction(enum.Enum):
    QUIT = "quit"
    MONITOR = "monitor"
    HELP = "help"
    BREAK = "break"


_ACTIONS = {
    ord("x"): EscapeAction.QUIT,
    ord("c"): EscapeAction.MONITOR,
    ord("h"): EscapeAction.HELP,
    ord("b"): EscapeAction.BREAK,
}

HELP_TEXT = (
    "C-a h    print this help\r\n"
    "C-a x    exit kvmlite\r\n"
    "C-a b    send a break (Linux: then a SysRq key)\r\n"
    "C-a c    switch to the monitor (not available yet)\r\n"
    "C-a C-a  send C-a to the guest\r\n"
)


class EscapeParser:
    """Splits terminal input into bytes for the guest and escape actions."""

    def __init__(self, escape: int = ESCAPE_CHAR) -> None:
        self.escape = escape
        self._pending = False

    def feed(self, data: bytes) -> tuple[bytes, list[EscapeAction]]:
        """Return the bytes to pass to the guest and the actions, in input order."""
        if not self._pending and self.escape not in data:
            return data, []  # the common case: no escape, no copy
        out = bytearray()
        actions: list[EscapeAction] = []
        for b in data:
            if self._pending:
                self._pending = False
                if b == self.escape:
                    out.append(b)
                elif b in _ACTIONS:
                    actions.append(_ACTIONS[b])
            elif b == self.escape:
                self._pending = True
            else:
                out.append(b)
        return bytes(out), actions

"""Bounded polls for effects that happen asynchronously (tests never sleep a fixed time).

``wait_until(cond, timeout, what)`` re-checks ``cond`` until it holds or the
deadline passes (an AssertionError naming ``what``).  ``unix_listening(path)``
tells whether a unix socket at ``path`` is *listening*, from /proc/net/unix:
a socket file exists from bind(), a moment before listen(), and a connect in
that moment is refused, which is how "wait until the path exists" tests flake.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

#: __SO_ACCEPTCON in the Flags column of /proc/net/unix: the socket listens.
SO_ACCEPTCON = 0x10000


def wait_until(
    cond: Callable[[], object],
    timeout: float = 10.0,
    what: str = "the condition",
    *,
    interval: float = 0.01,
    alive: Callable[[], object] | None = None,
) -> None:
    """Return once ``cond()`` is true; fail after ``timeout`` s or once ``alive()`` is false."""
    deadline = time.monotonic() + timeout
    while not cond():
        if alive is not None and not alive():
            raise AssertionError(f"gave up waiting for {what}: the process it needs ended")
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)


def unix_listening(path: str | os.PathLike[str], pid: int | None = None) -> bool:
    """Whether a unix socket bound to ``path`` listens (in ``pid``'s network namespace)."""
    want = os.fspath(path)
    table = f"/proc/{pid}/net/unix" if pid is not None else "/proc/net/unix"
    try:
        with open(table) as fh:
            next(fh, None)  # the header line
            for line in fh:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == want and int(fields[3], 16) & SO_ACCEPTCON:
                    return True
    except OSError:
        return False
    return False

"""A small expect-style driver for a guest's console.

Boot tests talk to a serial console: wait for a pattern, type a command,
wait for its output. This works on any pair of file descriptors (a
subprocess's pipes, a pty master, a socket), so the same helper drives QEMU
in the guestimage tests and kvmlite's own VMM in its boot tests.

Theory of operation: everything read is appended to ``transcript``; matching
runs on the part after the previous match (``pending``), so each expect()
consumes output up to the end of its match and a later expect() cannot
match the same text twice. Patterns are bytes regexes (str is encoded as
UTF-8), since console output may hold any bytes.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from collections.abc import Sequence
from typing import BinaryIO

Pattern = str | bytes | re.Pattern[bytes]


class ExpectError(AssertionError):
    """A console did not produce what a test waited for.

    An AssertionError, so pytest shows it as a test failure, with the end
    of the console output in the message."""


class ExpectTimeout(ExpectError):
    """The pattern did not appear in time."""


class ExpectEOF(ExpectError):
    """The other side closed the console before the pattern appeared."""


def _compile(pattern: Pattern) -> re.Pattern[bytes]:
    if isinstance(pattern, re.Pattern):
        return pattern
    if isinstance(pattern, str):
        pattern = pattern.encode()
    return re.compile(pattern)


class Expect:
    """Drive a console through ``read_fd`` (its output) and ``write_fd``."""

    def __init__(
        self,
        read_fd: int,
        write_fd: int | None = None,
        *,
        log: BinaryIO | None = None,
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.log = log
        self.process = process
        self.transcript = bytearray()
        self._pos = 0  # start of the unconsumed part of the transcript
        self.eof = False

    @classmethod
    def spawn(
        cls, argv: Sequence[str], *, log: BinaryIO | None = None, **popen_kwargs: object
    ) -> Expect:
        """Start ``argv`` with its stdin and stdout (stderr merged) as the console."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **popen_kwargs,
        )
        assert proc.stdin is not None and proc.stdout is not None
        return cls(proc.stdout.fileno(), proc.stdin.fileno(), log=log, process=proc)

    @property
    def pending(self) -> bytes:
        """Output read but not yet consumed by a match."""
        return bytes(self.transcript[self._pos :])

    def _tail(self, n: int = 2000) -> str:
        return bytes(self.transcript[-n:]).decode(errors="replace")

    def _read_some(self, timeout: float) -> bool:
        """Read what is available within ``timeout``; False on EOF."""
        ready, _, _ = select.select([self.read_fd], [], [], max(timeout, 0.0))
        if not ready:
            return True
        try:
            data = os.read(self.read_fd, 65536)
        except OSError:  # a pty master reads EIO once the slave side is gone
            data = b""
        if not data:
            self.eof = True
            return False
        self.transcript += data
        if self.log is not None:
            self.log.write(data)
            self.log.flush()
        return True

    def expect(self, pattern: Pattern, timeout: float) -> re.Match[bytes]:
        """Wait up to ``timeout`` seconds for ``pattern``; consume through the match."""
        regex = _compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.transcript, self._pos)
            if m:
                self._pos = m.end()
                return m
            if self.eof:
                raise ExpectEOF(
                    f"console closed before {regex.pattern!r} appeared; last output:\n"
                    + self._tail()
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise ExpectTimeout(
                    f"{regex.pattern!r} did not appear within {timeout} s; last output:\n"
                    + self._tail()
                )
            self._read_some(min(left, 1.0))

    def send(self, text: str | bytes) -> None:
        """Type ``text`` on the console, as is."""
        if self.write_fd is None:
            raise ExpectError("this console was opened read-only")
        data = text.encode() if isinstance(text, str) else text
        while data:
            n = os.write(self.write_fd, data)
            data = data[n:]

    def sendline(self, text: str | bytes = "") -> None:
        """Type ``text`` and Enter."""
        self.send((text.encode() if isinstance(text, str) else text) + b"\n")

    def wait_eof(self, timeout: float) -> bytes:
        """Read until the other side closes; return what was not consumed."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ExpectTimeout(
                    f"console still open after {timeout} s; last output:\n" + self._tail()
                )
            self._read_some(min(left, 1.0))
        return self.pending

    def close(self, kill_timeout: float = 5.0) -> int | None:
        """Stop a spawned process (terminate, then kill) and return its exit
        status; for bare fds do nothing and return None."""
        if self.process is None:
            return None
        proc = self.process
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(kill_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        return proc.returncode

    def __enter__(self) -> Expect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

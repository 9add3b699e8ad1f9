"""The expect-style console driver, against real subprocesses and a pty."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import time

import pytest

from kvmlite.testing.expect import Expect, ExpectEOF, ExpectError, ExpectTimeout

# A tiny "console": echoes lines back upper-cased, prints a prompt, exits on 'quit'.
_CONSOLE = r"""
import sys
sys.stdout.write("READY\n> "); sys.stdout.flush()
for line in sys.stdin:
    if line.strip() == "quit":
        print("BYE"); break
    sys.stdout.write(line.upper() + "> "); sys.stdout.flush()
"""


def _console() -> Expect:
    return Expect.spawn([sys.executable, "-u", "-c", _CONSOLE])


def test_expect_send_round_trip() -> None:
    with _console() as c:
        c.expect("READY", timeout=10)
        c.expect("> ", timeout=10)
        c.sendline("hello 42")
        m = c.expect(rb"HELLO (\d+)", timeout=10)
        assert m.group(1) == b"42"
        c.sendline("quit")
        c.expect("BYE", timeout=10)
        c.wait_eof(timeout=10)
        assert c.process is not None and c.process.wait(5) == 0


def test_a_match_is_consumed() -> None:
    with _console() as c:
        c.expect("READY", timeout=10)
        with pytest.raises(ExpectTimeout) as info:
            c.expect("READY", timeout=0.5)  # already consumed: must not match again
        assert "READY" in str(info.value)  # the message shows the console's output


def test_timeout_is_honoured_and_is_an_assertion() -> None:
    with _console() as c:
        start = time.monotonic()
        with pytest.raises(ExpectTimeout):
            c.expect("never printed", timeout=0.6)
        assert 0.5 < time.monotonic() - start < 5
        assert issubclass(ExpectTimeout, AssertionError)


def test_eof_before_the_pattern() -> None:
    c = Expect.spawn([sys.executable, "-c", "print('short')"])
    try:
        with pytest.raises(ExpectEOF, match="short"):
            c.expect("long", timeout=10)
    finally:
        assert c.close() == 0


def test_pty_and_log() -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; l = input(); print('got', l)"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    log = io.BytesIO()
    c = Expect(master, master, log=log)
    c.sendline("ping")
    c.expect(r"got ping", timeout=10)
    proc.wait(10)
    c.wait_eof(timeout=10)  # EIO on the master counts as EOF
    assert b"got ping" in log.getvalue()
    assert c.close() is None
    os.close(master)


def test_read_only_console_refuses_send() -> None:
    r, w = os.pipe()
    try:
        c = Expect(r)
        os.write(w, b"abc")
        assert c.expect(b"b", timeout=5).start() == 1
        assert c.pending == b"c"
        with pytest.raises(ExpectError):
            c.send("x")
    finally:
        os.close(r)
        os.close(w)

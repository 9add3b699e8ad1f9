"""StdioBackend on a real tty (pty.openpty) and on a pipe."""

import os
import pty
import signal
import subprocess
import sys
import termios

from kvmlite.backends.char.stdio import StdioBackend


def lflag(fd: int) -> int:
    return termios.tcgetattr(fd)[3]


def read_some(fd: int) -> bytes:
    return os.read(fd, 4096)


def test_raw_mode_entered_and_restored():
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        assert before[3] & termios.ICANON and before[3] & termios.ECHO
        b = StdioBackend(stdin_fd=slave, stdout_fd=slave, signal_handlers=False)
        assert b.is_tty
        raw = termios.tcgetattr(slave)
        assert not raw[3] & (termios.ICANON | termios.ECHO | termios.ISIG)
        assert not raw[0] & (termios.ICRNL | termios.IXON)
        assert raw[1] & termios.OPOST
        b.close()
        assert termios.tcgetattr(slave) == before
        b.close()  # idempotent
    finally:
        os.close(master)
        os.close(slave)


def test_escape_keys_through_a_tty():
    master, slave = pty.openpty()
    quits = []
    b = StdioBackend(
        lambda: quits.append(1),
        stdin_fd=slave,
        stdout_fd=slave,
        signal_handlers=False,
    )
    try:
        os.write(master, b"ls\r\x03\x01h")
        assert b.read_available() == b"ls\r\x03"  # CR and Ctrl-C reach the guest as is
        assert b"exit kvmlite" in read_some(master)
        os.write(master, b"\x01\x01\x01x")
        assert b.read_available() == b"\x01"
        assert quits == [1]
        b.write(b"guest says hi\n")
        assert b"guest says hi" in read_some(master)
    finally:
        b.close()
        os.close(master)
        os.close(slave)


def test_quit_flag_without_callback():
    master, slave = pty.openpty()
    b = StdioBackend(stdin_fd=slave, stdout_fd=slave, signal_handlers=False)
    try:
        os.write(master, b"\x01x")
        b.read_available()
        assert b.quit_requested
    finally:
        b.close()
        os.close(master)
        os.close(slave)


def test_pipe_no_raw_mode_no_escapes():
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    b = StdioBackend(stdin_fd=r, stdout_fd=out_w)
    try:
        assert not b.is_tty
        assert b.fileno() == r
        os.write(w, b"a\x01xb")
        assert b.read_available() == b"a\x01xb"
        assert not b.quit_requested
        b.write(b"out")
        assert os.read(out_r, 10) == b"out"
        os.close(w)
        assert b.read_available() == b""
        assert b.eof
    finally:
        b.close()
        for fd in (r, out_r, out_w):
            os.close(fd)


CHILD = r"""
import os, sys, time
from kvmlite.backends.char.stdio import StdioBackend
fd = int(sys.argv[1])
b = StdioBackend(stdin_fd=fd, stdout_fd=fd)
os.write(1, b"raw\n")
time.sleep(30)
"""


def test_sigterm_restores_terminal():
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(slave)], pass_fds=(slave,), stdout=subprocess.PIPE
        )
        assert child.stdout.readline() == b"raw\n"
        assert not lflag(slave) & termios.ICANON
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == -signal.SIGTERM  # still dies by the signal
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_atexit_restores_terminal():
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        code = CHILD.replace("time.sleep(30)", "sys.exit(3)")
        child = subprocess.run(
            [sys.executable, "-c", code, str(slave)],
            pass_fds=(slave,),
            capture_output=True,
            timeout=30,
        )
        assert child.returncode == 3
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_break_key_calls_on_break():
    master, slave = pty.openpty()
    breaks = []
    b = StdioBackend(
        stdin_fd=slave, stdout_fd=slave, signal_handlers=False, on_break=lambda: breaks.append(1)
    )
    try:
        os.write(master, b"\x01bt")
        assert b.read_available() == b"t"
        assert breaks == [1]
    finally:
        b.close()
        os.close(master)
        os.close(slave)


def test_write_to_nonblocking_full_pipe_waits_not_fails():
    import threading

    r, w = os.pipe()
    os.set_blocking(w, False)
    b = StdioBackend(stdin_fd=r, stdout_fd=w)
    data = b"z" * (1 << 20)  # far more than a pipe buffer
    got = bytearray()

    def drain() -> None:
        while len(got) < len(data):
            got.extend(os.read(r, 65536))

    t = threading.Thread(target=drain)
    t.start()
    b.write(data)
    t.join(timeout=10)
    assert bytes(got) == data
    b.close()
    os.close(r)
    os.close(w)

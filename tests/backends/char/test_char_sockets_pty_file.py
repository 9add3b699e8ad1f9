"""Unix socket, pty, file and null backends with real peers."""

import os
import select
import socket
import time

import pytest

from kvmlite.backends.char import (
    FileBackend,
    NullBackend,
    PtyBackend,
    StdioBackend,
    UnixSocketBackend,
    parse_console_spec,
)
from kvmlite.errors import ConfigError


def wait_readable(fd: int, timeout: float = 5.0) -> None:
    r, _, _ = select.select([fd], [], [], timeout)
    assert r, "backend fd never became readable"


def pump(backend, until, timeout: float = 5.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while not until(got) and time.monotonic() < deadline:
        wait_readable(backend.fileno(), deadline - time.monotonic())
        got += backend.read_available()
    return got


def test_unix_server_buffers_until_client(tmp_path):
    path = str(tmp_path / "con.sock")
    b = UnixSocketBackend(path, buffer_limit=8)
    try:
        fd = b.fileno()
        b.write(b"0123456789ab")  # more than the limit: the oldest bytes go
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        assert pump(b, lambda _: b.connected) == b""
        assert b.fileno() == fd  # stable across clients
        c.settimeout(5)
        assert c.recv(100) == b"456789ab"
        b.write(b"live")
        assert c.recv(100) == b"live"
        c.sendall(b"typed")
        assert pump(b, lambda g: g == b"typed") == b"typed"
        # A second client waits until the first leaves.
        c2 = socket.socket(socket.AF_UNIX)
        c2.connect(path)
        c.close()
        pump(b, lambda _: not b.connected)
        pump(b, lambda _: b.connected)
        b.write(b"second")
        c2.settimeout(5)
        assert c2.recv(100) == b"second"
        assert not b.eof
        c2.close()
    finally:
        b.close()
    assert not os.path.exists(path)


def test_unix_refuses_live_socket_and_non_socket(tmp_path):
    path = str(tmp_path / "s")
    b = UnixSocketBackend(path)
    try:
        with pytest.raises(ConfigError, match="in use"):
            UnixSocketBackend(path)
    finally:
        b.close()
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="not a socket"):
        UnixSocketBackend(str(tmp_path / "f"))
    with pytest.raises(ConfigError, match="cannot listen"):
        UnixSocketBackend(str(tmp_path / "missing" / "s"))


def test_unix_stale_socket_is_replaced(tmp_path):
    path = str(tmp_path / "s")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # file left behind, nobody listening
    UnixSocketBackend(path).close()


def test_unix_client_mode_eof(tmp_path):
    path = str(tmp_path / "s")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    b = UnixSocketBackend(path, server=False)
    try:
        peer, _ = srv.accept()
        b.write(b"out")
        peer.settimeout(5)
        assert peer.recv(10) == b"out"
        peer.sendall(b"in")
        assert pump(b, lambda g: g == b"in") == b"in"
        peer.close()
        pump(b, lambda _: b.eof)
        assert b.eof
    finally:
        b.close()
        srv.close()
    with pytest.raises(ConfigError, match="cannot connect"):
        UnixSocketBackend(path, server=False)


def test_pty_with_real_reader():
    names = []
    b = PtyBackend(announce=names.append)
    try:
        assert names == [b.path] and b.path.startswith("/dev/pts/")
        reader = os.open(b.path, os.O_RDWR | os.O_NOCTTY)
        try:
            b.write(b"boot log\n")
            wait_readable(reader)
            assert os.read(reader, 100) == b"boot log\n"  # raw: no CR added
            os.write(reader, b"root\n")
            assert pump(b, lambda g: g == b"root\n") == b"root\n"
        finally:
            os.close(reader)
        # No reader: output is dropped, never blocks.
        start = time.monotonic()
        for _ in range(2000):
            b.write(b"x" * 100)
        assert time.monotonic() - start < 5
        # Raw slave: guest output is not echoed back to the guest as input.
        assert b.read_available() == b""
    finally:
        b.close()


def test_file_truncate_and_append(tmp_path):
    p = tmp_path / "log"
    p.write_bytes(b"old")
    with FileBackend(str(p)) as f:
        assert f.fileno() is None and f.read_available() == b""
        f.write(b"new")
    assert p.read_bytes() == b"new"
    f = parse_console_spec(f"file:{p},append=on")
    f.write(b"+more")
    f.close()
    assert p.read_bytes() == b"new+more"
    with pytest.raises(ConfigError, match="cannot open"):
        FileBackend(str(tmp_path / "no" / "such"))


def test_null():
    n = NullBackend()
    n.write(b"x")
    assert n.fileno() is None and n.read_available() == b""


def test_parse_specs(tmp_path):
    assert isinstance(parse_console_spec("null"), NullBackend)
    b = parse_console_spec("stdio")
    assert isinstance(b, StdioBackend)
    b.close()
    p = parse_console_spec("pty")
    assert isinstance(p, PtyBackend)
    p.close()
    u = parse_console_spec(f"unix:{tmp_path}/c")
    assert isinstance(u, UnixSocketBackend)
    u.close()
    for bad in ["", "serial", "file:", "unix:", "stdio:x", "pty:1", "file:,append=on", "tcp:1"]:
        with pytest.raises(ConfigError):
            parse_console_spec(bad)


def test_unix_output_on_one_thread_input_on_another(tmp_path):
    """A vCPU thread writes the guest's output while the I/O loop reads input:
    no BufferError, no input lost (they shared the output buffer unlocked)."""
    import threading

    path = str(tmp_path / "con.sock")
    b = UnixSocketBackend(path, buffer_limit=1 << 20)
    c = socket.socket(socket.AF_UNIX)
    try:
        c.connect(path)
        pump(b, lambda _: b.connected)
        errors: list[BaseException] = []
        stop = threading.Event()

        def writer() -> None:
            try:
                while not stop.is_set():
                    b.write(b"x" * 700)
            except BaseException as e:
                errors.append(e)

        def drain() -> None:  # the client keeps reading, so send() keeps running
            c.settimeout(0.2)
            while not stop.is_set():
                try:
                    c.recv(1 << 16)
                except OSError:
                    pass

        threads = [threading.Thread(target=writer), threading.Thread(target=drain)]
        for t in threads:
            t.start()
        typed = b""
        for i in range(300):
            c.sendall(b"%05d" % i)
            missing = b"".join(b"%05d" % k for k in range(i + 1))[len(typed) :]
            try:
                typed += pump(b, lambda g, w=missing: g == w)
            except BaseException as e:
                errors.append(e)
                break
        stop.set()
        for t in threads:
            t.join(5)
        assert not errors
        assert typed == b"".join(b"%05d" % k for k in range(300))
    finally:
        c.close()
        b.close()

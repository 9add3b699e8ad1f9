"""Unix socket paths are checked before binding: empty, too long, not a socket, in use."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kvmlite.backends.char.unix_socket import UnixSocketBackend
from kvmlite.backends.net.socket_stream import StreamSocketBackend
from kvmlite.backends.unix_path import UNIX_PATH_MAX, check_unix_path, clear_stale_socket
from kvmlite.errors import ConfigError


@pytest.mark.parametrize(
    ("path", "needle"),
    [("", "empty"), ("a\0b", "NUL"), ("/tmp/" + "x" * 103, "at most 107")],
)
def test_bad_paths(path: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        check_unix_path(path, "test")


def test_the_longest_path_is_fine() -> None:
    check_unix_path("/tmp/" + "x" * (UNIX_PATH_MAX - 5), "test")


def test_clear_stale_socket(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # nobody listens: stale
    clear_stale_socket(str(stale), "test")
    assert not stale.exists()
    live = tmp_path / "live.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(live))
    s.listen(1)
    try:
        with pytest.raises(ConfigError, match="in use"):
            clear_stale_socket(str(live), "test")
        assert live.exists()
    finally:
        s.close()
    f = tmp_path / "file"
    f.write_text("keep")
    with pytest.raises(ConfigError, match="not a socket"):
        clear_stale_socket(str(f), "test")
    assert f.read_text() == "keep"


@pytest.mark.parametrize("server", [True, False])
@pytest.mark.parametrize(("path", "needle"), [("", "empty"), ("/tmp/" + "x" * 120, "at most")])
def test_console_and_net_sockets_check_their_path(server: bool, path: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        UnixSocketBackend(path, server=server)
    with pytest.raises(ConfigError, match=needle):
        (StreamSocketBackend.listen if server else StreamSocketBackend.connect)(path)

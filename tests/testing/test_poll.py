"""kvmlite.testing.poll: bounded waits and the listening-socket check."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kvmlite.testing.poll import unix_listening, wait_until


def test_a_bound_socket_listens_only_after_listen(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(path))
        # The race the tests had: the path exists, a connect is still refused.
        assert path.exists() and not unix_listening(path)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with pytest.raises(ConnectionRefusedError):
            c.connect(str(path))
        c.close()
        s.listen(1)
        assert unix_listening(path)
    finally:
        s.close()
    assert not unix_listening(tmp_path / "nothing.sock")


def test_wait_until_is_bounded() -> None:
    seen = iter(range(100))
    wait_until(lambda: next(seen) >= 3, timeout=5, what="three")
    with pytest.raises(AssertionError, match="never did not happen within 0.05 s"):
        wait_until(lambda: False, timeout=0.05, what="never")
    with pytest.raises(AssertionError, match="the process it needs ended"):
        wait_until(lambda: False, timeout=5, alive=lambda: False)

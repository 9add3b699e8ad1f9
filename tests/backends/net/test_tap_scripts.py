"""Up- and down-scripts (QEMU's ``script=`` / ``downscript=``) and closing a tap."""

from __future__ import annotations

import errno
import os
import select
import time
from pathlib import Path

import pytest
from test_tap_netns import netns_no_ipv6

from kvmlite.backends.net import tap, tap_open
from kvmlite.backends.net.tap import TapBackend
from kvmlite.errors import ConfigError
from kvmlite.testing.netns import NetNs

_ns = pytest.fixture(netns_no_ipv6, name="netns")


def script(tmp_path: Path, name: str, body: str) -> str:
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)
    return str(p)


def fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def exists(ns: NetNs, ifname: str) -> bool:
    return ns.sh("ip", "link", "show", ifname, check=False).returncode == 0


def test_up_script_runs_with_the_interface_name(netns: NetNs, tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    up = script(tmp_path, "up", f'echo "$1" > {log}; ip link set "$1" up')
    [b] = netns.run(TapBackend.open, None, script=up)
    try:
        assert log.read_text().strip() == b.ifname
        assert "UP" in netns.sh("ip", "link", "show", b.ifname).stdout  # run in the namespace
    finally:
        b.close()


def test_failing_up_script_closes_the_tap(netns: NetNs, tmp_path: Path) -> None:
    up = script(tmp_path, "up", 'echo "boom: cannot bridge $1" >&2; exit 3')
    before = fds()
    with pytest.raises(ConfigError) as e:
        netns.run(TapBackend.open, "kvlup0", queues=2, script=up)
    msg = str(e.value)
    assert "exit status 3" in msg and "boom: cannot bridge kvlup0" in msg and up in msg
    assert fds() <= before
    assert not exists(netns, "kvlup0")


def test_up_script_that_hangs_is_killed(
    netns: NetNs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tap_open, "SCRIPT_TIMEOUT", 0.5)
    up = script(tmp_path, "up", "sleep 30")
    t = time.monotonic()
    with pytest.raises(ConfigError, match="did not finish within 0.5 s"):
        netns.run(TapBackend.open, "kvlup1", script=up)
    assert time.monotonic() - t < 10
    assert not exists(netns, "kvlup1")


@pytest.mark.parametrize("kind", ["missing", "not executable"])
def test_up_script_that_cannot_run(netns: NetNs, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "up"
    if kind == "not executable":
        path.write_text("#!/bin/sh\n")
    with pytest.raises(ConfigError, match="cannot run script"):
        netns.run(TapBackend.open, "kvlup2", script=str(path))
    assert not exists(netns, "kvlup2")


def test_down_script_runs_once_when_the_last_queue_closes(netns: NetNs, tmp_path: Path) -> None:
    log = tmp_path / "down.log"
    down = script(tmp_path, "down", f'ip link show "$1" >/dev/null && echo "down $1" >> {log}')
    backends = netns.run(TapBackend.open, "kvldown0", queues=2, downscript=down)
    netns.run(backends[0].close)
    assert not log.exists()
    netns.run(backends[1].close)
    netns.run(backends[1].close)  # idempotent: nothing runs twice
    # It ran while the interface still existed, once for the whole tap.
    assert log.read_text() == "down kvldown0\n"


def test_failing_down_script_is_logged_not_raised(
    netns: NetNs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = script(tmp_path, "down", "echo no bridge >&2; exit 1")
    [b] = netns.run(TapBackend.open, "kvldown1", downscript=down)
    b.close()
    assert b.closed
    assert any("no bridge" in r.message for r in caplog.records)


def test_close_releases_every_fd_and_is_idempotent(netns: NetNs) -> None:
    before = fds()
    backends = netns.run(TapBackend.open, "kvlclose0", queues=4)
    assert len(fds() - before) == 8  # a tap fd and an epoll fd per queue
    for b in backends:
        b.close()
        b.close()
        assert b.closed and b.recv_frames() == []
        b.send(bytes(60))  # after close: dropped, not raised
        assert b.tx_dropped == 1
    assert fds() == before
    assert not exists(netns, "kvlclose0")


def test_out_of_fds_while_building_leaves_nothing_open(
    netns: NetNs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = []

    class FailingSelect:
        @staticmethod
        def epoll() -> select.epoll:
            if len(made) == 2:
                raise OSError(errno.EMFILE, "Too many open files")
            made.append(select.epoll())
            return made[-1]

        def __getattr__(self, name: str) -> object:
            return getattr(select, name)

    monkeypatch.setattr(tap, "select", FailingSelect())
    log = tmp_path / "down.log"
    down = script(tmp_path, "down", f"echo ran >> {log}")
    before = fds()
    with pytest.raises(OSError):
        netns.run(TapBackend.open, "kvlemfile0", queues=3, downscript=down)
    assert fds() == before
    assert not exists(netns, "kvlemfile0") and not log.exists()

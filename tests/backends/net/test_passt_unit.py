"""PasstBackend's process handling with stand-ins for passt: no root, no namespace needed.

A small script takes passt's place (``passt=PATH``) and does what a real
passt does at the edges: writes its pid to the ``--pid`` file once "ready",
speaks the framing on the ``--fd`` socket, exits, ignores SIGTERM. The real
passt is the judge of the protocol in test_passt.py.
"""

from __future__ import annotations

import io
import logging
import os
import select
import signal
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from kvmlite.backends.net import passt as passt_mod
from kvmlite.backends.net.hostfwd import parse_hostfwd
from kvmlite.backends.net.passt import PasstBackend, read_log_tail
from kvmlite.errors import ConfigError

PRELUDE = """\
import os, signal, socket, struct, sys, time
args = sys.argv[1:]
fd = int(args[args.index("--fd") + 1])
pidfile = args[args.index("--pid") + 1]
sock = socket.socket(fileno=fd)
def ready():
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\\n")
"""


def fake_passt(tmp_path: Path, body: str) -> str:
    path = tmp_path / "passt"
    path.write_text(f"#!{sys.executable}\n{PRELUDE}{textwrap.dedent(body)}")
    path.chmod(0o755)
    return str(path)


def test_missing_binary_on_path() -> None:
    with pytest.raises(
        ConfigError, match=r"'no-such-passt' was not found on PATH.*apt-get install"
    ):
        PasstBackend.start(passt="no-such-passt")


def test_missing_binary_by_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is not an executable file.*apt-get install passt"):
        PasstBackend.start(passt=str(tmp_path / "passt"))


def test_prefix_that_cannot_run(tmp_path: Path) -> None:
    exe = fake_passt(tmp_path, "ready()\ntime.sleep(30)\n")
    with pytest.raises(ConfigError, match=r"cannot run /no/such/wrapper"):
        PasstBackend.start(passt=exe, command_prefix=("/no/such/wrapper",))


@pytest.mark.parametrize("arg", ["--fd", "-F", "--socket=/tmp/x", "-s", "-P", "--pid", "-l", "-f"])
def test_options_kvmlite_sets_itself_are_refused(arg: str) -> None:
    with pytest.raises(ConfigError, match="cannot be given: kvmlite runs passt with"):
        PasstBackend.start(extra_args=(arg, "3"))


def test_malformed_hostfwd_is_refused_before_anything_runs(tmp_path: Path) -> None:
    exe = fake_passt(tmp_path, "open(pidfile + '.ran', 'w')\n")
    from kvmlite.backends.net.hostfwd import HostFwd

    with pytest.raises(ConfigError, match="both forward tcp host port 22"):
        PasstBackend.start([HostFwd("tcp", "", 22, 1), HostFwd("tcp", "", 22, 2)], passt=exe)


def test_real_passt_rejects_a_bad_option() -> None:
    # The real passt exits at once on an unknown option: its own words come back.
    with pytest.raises(ConfigError) as e:
        PasstBackend.start(extra_args=("--no-such-option",))
    msg = str(e.value)
    assert "passt failed to start (exit status 1)" in msg
    assert "unrecognized option '--no-such-option'" in msg
    assert "Usage" not in msg  # the usage text is cut off


def test_real_passt_rejects_a_bad_port() -> None:
    with pytest.raises(ConfigError, match="Invalid port specifier 70000"):
        PasstBackend.start(extra_args=("-t", "70000"))


def test_exit_before_ready(tmp_path: Path) -> None:
    exe = fake_passt(
        tmp_path, "print('Cannot frobnicate the gizmo', file=sys.stderr)\nsys.exit(7)\n"
    )
    with pytest.raises(ConfigError, match=r"\(exit status 7\): Cannot frobnicate the gizmo"):
        PasstBackend.start(passt=exe)


def test_never_ready_times_out_and_is_stopped(tmp_path: Path) -> None:
    mark = tmp_path / "pid"
    exe = fake_passt(
        tmp_path, f"open({str(mark)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    t = time.monotonic()
    with pytest.raises(ConfigError, match=r"did not come up within 0.5 s"):
        PasstBackend.start(passt=exe, ready_timeout=0.5)
    assert time.monotonic() - t < 5
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(int(mark.read_text()), 0)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_failed_start_leaks_no_fd_and_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # passt came up, then building the backend failed (here: out of fds for its
    # epoll): the socket, log file and pipe are closed and passt is stopped.
    mark = tmp_path / "pid"
    exe = fake_passt(
        tmp_path, f"open({str(mark)!r}, 'w').write(str(os.getpid()))\nready()\ntime.sleep(60)\n"
    )

    def no_fds(self: PasstBackend, *args: object, **kwargs: object) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(PasstBackend, "__init__", no_fds)
    before = open_fds()
    with pytest.raises(OSError, match="Too many open files"):
        PasstBackend.start(passt=exe)
    assert open_fds() == before
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(int(mark.read_text()), 0)


def test_passt_that_exits_at_once_leaks_no_fd(tmp_path: Path) -> None:
    exe = fake_passt(tmp_path, "sys.exit(3)\n")
    before = open_fds()
    with pytest.raises(ConfigError, match=r"exit status 3"):
        PasstBackend.start(passt=exe)
    assert open_fds() == before


def test_frames_flow_and_exit_under_the_guest_is_one_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The stand-in echoes one frame, says something on stderr and exits with status 3.
    exe = fake_passt(
        tmp_path,
        """
        ready()
        n = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))[0]
        frame = sock.recv(n, socket.MSG_WAITALL)
        sock.sendall(struct.pack(">I", n) + frame[::-1])
        print("TCP: out of flux capacitors", file=sys.stderr, flush=True)
        sys.exit(3)
        """,
    )
    b = PasstBackend.start(passt=exe, name="net0")
    try:
        caplog.set_level(logging.INFO, logger="kvmlite.backends.net")
        b.send(bytes(range(60)))
        got: list[bytes] = []
        while not b.closed:
            assert select.select([b.fileno()], [], [], 5)[0], "nothing came"
            b.service()
            got += b.recv_frames()
        assert got == [bytes(range(60))[::-1]]
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(errors) == 1
        msg = errors[0].getMessage()
        assert msg.startswith("net0: passt stopped (exit status 3; peer closed the connection)")
        assert "its last message: TCP: out of flux capacitors" in msg
        assert "rest of the VM keeps running" in msg
        assert b.proc.returncode == 3
    finally:
        b.close()


def test_close_kills_a_passt_that_ignores_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exe = fake_passt(
        tmp_path,
        """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sock.close()  # not even the socket's EOF stops it
        ready()
        while True:
            time.sleep(1)
        """,
    )
    monkeypatch.setattr(passt_mod, "STOP_TIMEOUT", 0.3)
    b = PasstBackend.start(passt=exe)
    t = time.monotonic()
    b.close()
    assert b.proc.returncode == -signal.SIGKILL
    assert time.monotonic() - t < 3
    assert "ignored SIGTERM" in caplog.text
    b.close()  # idempotent


def test_passt_that_closes_the_socket_but_lives_on_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exe = fake_passt(
        tmp_path,
        """
        ready()
        sock.close()
        time.sleep(60)
        """,
    )
    monkeypatch.setattr(passt_mod, "REAP_TIMEOUT", 0.2)
    b = PasstBackend.start(passt=exe)
    try:
        assert select.select([b.fileno()], [], [], 5)[0]
        b.service()
        assert b.recv_frames() == []
        assert b.closed
        assert b.proc.returncode == -signal.SIGTERM
        assert "passt stopped (still running; peer closed the connection)" in caplog.text
    finally:
        b.close()


def test_start_passes_hostfwd_and_extra_args_to_passt(tmp_path: Path) -> None:
    exe = fake_passt(
        tmp_path,
        """
        print(" ".join(args), file=sys.stderr, flush=True)
        ready()
        sock.recv(1)
        """,
    )
    b = PasstBackend.start(
        [parse_hostfwd("tcp::2222-:22"), parse_hostfwd("udp:127.0.0.1:5353-:53")],
        passt=exe,
        extra_args=("-4", "-D", "10.0.2.3"),
    )
    try:
        (line,) = b.log_tail(1)
        assert line.startswith("--foreground --fd ")
        assert "--log-file /proc/self/fd/2" in line
        assert line.endswith("-t 2222:22 -u 127.0.0.1/5353:53 -4 -D 10.0.2.3")
    finally:
        b.close()


def test_read_log_tail_drops_noise_and_repeats() -> None:
    text = (
        "Failed to send 47 bytes to syslog\n"
        "Don't run as root. Changing to nobody...\n"
        "passt unknown version: /usr/bin/passt.avx2 (1234)\n"
        "0.7619: WARNING: No external routable interface for IPv4\n"
        "No external routable interface for IPv4\n"
        "0.7619: ERROR:   External interface not usable\n"
        "External interface not usable\n"
        "\n"
    )
    with tempfile.TemporaryFile() as f:
        f.write(text.encode())
        f.flush()
        assert read_log_tail(f, 10) == [
            "Don't run as root. Changing to nobody...",
            "No external routable interface for IPv4",
            "External interface not usable",
        ]
        assert read_log_tail(f, 1) == ["External interface not usable"]


def test_read_log_tail_of_a_closed_file_is_empty() -> None:
    f = tempfile.TemporaryFile()
    f.close()
    assert read_log_tail(f) == []
    assert read_log_tail(io.BytesIO(b"x")) == []  # no fileno: nothing, no exception

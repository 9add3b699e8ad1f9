"""``kvmlite serve`` as a process: serves a front-end, stops cleanly on SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlite import serve
from kvmlite.testing import MockDriver
from kvmlite.testing.poll import unix_listening
from kvmlite.vhost_user.protocol import Request

from .frontend import Frontend
from .test_backend import start_blk


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def spawn(procs: list, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvmlite.serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    return proc


def wait_socket(proc: subprocess.Popen, path: Path) -> None:
    deadline = time.monotonic() + 20
    while not unix_listening(path, proc.pid):  # exists() is true before listen()
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read()}")
        assert time.monotonic() < deadline, "serve never created its socket"
        time.sleep(0.05)


def wait_used(f: Frontend, drv: MockDriver) -> list:
    for _ in range(100):
        used = drv.get_used()
        if used:
            return used
        f.wait_call(0, 0.1)
    raise AssertionError("no completion")


def test_serve_blk_process(tmp_path: Path, procs: list) -> None:
    image = tmp_path / "d.raw"
    image.write_bytes(bytes(1 << 20))
    sock = tmp_path / "blk.sock"
    proc = spawn(procs, "blk", "--socket", str(sock), f"{image},serial=abc")
    wait_socket(proc, sock)
    for _ in range(2):  # two front-ends in turn
        f = Frontend(str(sock))
        try:
            drv = start_blk(f)
            data = os.urandom(512)
            drv.add_chain([struct.pack("<IIQ", 1, 0, 4), data], [1])
            drv.kick()
            assert wait_used(f, drv)[0].written == b"\x00"
            assert image.read_bytes()[2048:2560] == data
        finally:
            f.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not sock.exists()


def test_serve_survives_a_frontend_shrinking_its_memory(tmp_path: Path, procs: list) -> None:
    """A front-end that ftruncates its RAM after SET_MEM_TABLE and kicks cannot SIGBUS us."""
    image = tmp_path / "d.raw"
    image.write_bytes(bytes(1 << 20))
    sock = tmp_path / "blk.sock"
    proc = spawn(procs, "blk", "--socket", str(sock), str(image))
    wait_socket(proc, sock)
    f = Frontend(str(sock))
    try:
        drv = start_blk(f)
        drv.add_chain([struct.pack("<IIQ", 1, 0, 0), b"\x33" * 512], [1])
        try:
            os.ftruncate(f.memfd, 0)
            shrunk = True
        except PermissionError:  # the back-end sealed it (F_SEAL_SHRINK)
            shrunk = False
        os.eventfd_write(f.kick[0], 1)  # touches no memory of ours
        if not shrunk:
            assert wait_used(f, drv)[0].written == b"\x00"
        else:
            f.wait_call(0, 2)
    finally:
        f.close()
    assert proc.poll() is None, f"serve died ({proc.returncode}) when the front-end shrank RAM"
    # Memory that can shrink and cannot be sealed is refused, with a clear error.
    f = Frontend(str(sock), sealable=False)
    try:
        f.negotiate()
        assert f.set_mem_table() == 1
    finally:
        f.close()
    f = Frontend(str(sock))  # and the next front-end is served
    try:
        drv = start_blk(f)
        drv.add_chain([struct.pack("<IIQ", 0, 0, 0)], [512, 1])
        drv.kick()
        assert wait_used(f, drv)[0].written[:512] == b"\x33" * 512
    finally:
        f.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert "its fd could shrink under the back-end" in proc.stderr.read()


def test_serve_blk_read_only(tmp_path: Path, procs: list) -> None:
    image = tmp_path / "d.raw"
    image.write_bytes(b"\x11" * (1 << 20))
    sock = tmp_path / "blk.sock"
    proc = spawn(procs, "blk", "--socket", str(sock), f"{image},ro")
    wait_socket(proc, sock)
    f = Frontend(str(sock))
    try:
        drv = start_blk(f)
        drv.add_chain([struct.pack("<IIQ", 1, 0, 0), b"\x22" * 512], [1])
        drv.kick()
        assert wait_used(f, drv)[0].written == b"\x01"  # VIRTIO_BLK_S_IOERR
    finally:
        f.close()
    assert image.read_bytes() == b"\x11" * (1 << 20)


def test_serve_rng_process(tmp_path: Path, procs: list) -> None:
    sock = tmp_path / "rng.sock"
    proc = spawn(procs, "rng", "--socket", str(sock))
    wait_socket(proc, sock)
    f = Frontend(str(sock))
    try:
        features = f.negotiate()
        assert f.set_mem_table() == 0
        drv = MockDriver(f.memory, 64, event_idx=bool(features & 1 << 29))
        assert f.setup_ring(0, drv) == 0
        drv.add_chain([], [64])
        drv.kick()
        [used] = wait_used(f, drv)
        assert used.length == 64 and used.written != b"\xaa" * 64
    finally:
        f.close()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0


def test_serve_missing_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = serve.main(["blk", "--socket", str(tmp_path / "s"), str(tmp_path / "nope.raw")])
    assert rc == 1
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_serve_bad_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "d.raw"
    image.write_bytes(bytes(4096))
    assert serve.main(["blk", "--socket", str(tmp_path / "s"), f"{image},bogus"]) == 1
    assert "bad disk option" in capsys.readouterr().err


def test_serve_socket_in_missing_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve.main(["rng", "--socket", str(tmp_path / "no" / "s")]) == 1
    assert "cannot listen" in capsys.readouterr().err


def test_register_adds_serve() -> None:
    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "rng", "--socket", "/x"])
    assert args.func is serve.cmd_rng and args.socket == "/x"


@pytest.mark.parametrize("value", ["100", "0", "65536", "x"])
def test_serve_bad_queue_size(tmp_path: Path, value: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        serve.main(["blk", "--socket", str(tmp_path / "s"), "--queue-size", value, "d.raw"])
    assert e.value.code == 2
    assert "power of two" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: "", "socket path is empty"),
        (lambda d: str(d / ("s" * 120)), "holds at most 107"),
        (
            lambda d: (d / "f").write_bytes(b"keep") and str(d / "f"),
            "is a file that is not a socket",
        ),
        (lambda d: (d / "dir").mkdir() or str(d / "dir"), "is a directory"),
    ],
    ids=["empty", "too-long", "regular-file", "directory"],
)
def test_serve_bad_socket_path(
    tmp_path: Path, capsys: pytest.CaptureFixture, make, expected
) -> None:  # noqa: ANN001
    path = make(tmp_path)
    assert serve.main(["rng", "--socket", path]) == 1
    err = capsys.readouterr().err
    assert expected in err and "None" not in err
    if path.endswith("/f"):
        assert Path(path).read_bytes() == b"keep"  # not replaced


def test_serve_refuses_a_socket_in_use(tmp_path: Path, procs: list) -> None:
    sock = tmp_path / "rng.sock"
    wait_socket(spawn(procs, "rng", "--socket", str(sock)), sock)
    # A subprocess with a timeout: a serve that took the socket over would run on.
    r = subprocess.run(
        [sys.executable, "-m", "kvmlite.serve", "rng", "--socket", str(sock)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 1 and "in use by another program" in r.stderr
    f = Frontend(str(sock))  # the first serve still has its socket
    try:
        assert f.call_u64(Request.GET_QUEUE_NUM) == 1
    finally:
        f.close()

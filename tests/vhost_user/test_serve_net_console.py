"""``kvmlite serve net`` and ``kvmlite serve console`` as processes."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from kvmlite.devices.virtio.console import VIRTIO_CONSOLE_F_MULTIPORT
from kvmlite.vhost_user import protocol as p
from kvmlite.vhost_user.protocol import Request

from .frontend import Frontend
from .test_net import Peer, round_trip, start
from .test_serve import procs, spawn, wait_socket  # noqa: F401


def connect_when_there(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + 10
    while True:
        try:
            s.connect(str(path))
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            assert time.monotonic() < deadline, f"nothing listens on {path}"
            time.sleep(0.05)


def test_serve_net_over_a_socket_network(tmp_path: Path, procs: list) -> None:  # noqa: F811
    sock, netsock = tmp_path / "net.sock", tmp_path / "frames.sock"
    proc = spawn(
        procs, "net", "--socket", str(sock), "--queue-size", "64", f"socket,listen={netsock}"
    )
    wait_socket(proc, sock)
    peer = Peer(connect_when_there(netsock))
    f = Frontend(str(sock))
    try:
        rx, tx = start(f)
        round_trip(f, rx, tx, peer, 3, 4)
    finally:
        f.close()
        peer.sock.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not sock.exists()


def test_serve_net_refuses_no_network(tmp_path: Path, procs: list) -> None:  # noqa: F811
    proc = spawn(procs, "net", "--socket", str(tmp_path / "n.sock"), "none")
    assert proc.wait(20) == 1
    assert "needs a network" in proc.stderr.read()
    proc = spawn(procs, "net", "--socket", str(tmp_path / "n.sock"), "socket,bogus=1")
    assert proc.wait(20) == 1
    assert "bad option" in proc.stderr.read()


def test_serve_console_process(tmp_path: Path, procs: list) -> None:  # noqa: F811
    from .test_console import RX, TX, both_directions, drivers

    sock, con = tmp_path / "vhost.sock", tmp_path / "con.sock"
    proc = spawn(procs, "console", "--socket", str(sock), f"unix:{con}")
    wait_socket(proc, sock)
    client = connect_when_there(con)
    client.settimeout(5)
    f = Frontend(str(sock))
    try:
        features = f.negotiate()
        # Without MULTIPORT: port 0's data queues only.
        no_mp = features & ~(1 << VIRTIO_CONSOLE_F_MULTIPORT)
        assert f.ack(Request.SET_FEATURES, p.u64(no_mp)) == 0
        assert f.set_mem_table() == 0
        rx, tx = drivers(f, 2)
        assert f.setup_ring(RX, rx) == 0 and f.setup_ring(TX, tx) == 0
        both_directions(f, rx, tx, client)
    finally:
        f.close()
        client.close()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0

"""Two Linux guests wired together by ``kvmlite serve net socket,listen=P`` and
``socket,connect=P``; and one against QEMU's own ``-netdev stream`` server.

The socket backend carries frames over a unix stream socket with a 4-byte
big-endian length in front of each (QEMU's ``-netdev stream`` framing), so
two back-ends (or a back-end and QEMU) make a two-port cable.  Nothing here
needs root: no interface is created anywhere.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kvmlite.testing.poll import unix_listening

from . import qemu_rig
from .qemu_rig import GuestShell, NetGuest, boot, qemu_nic, serve_net, vhost_user_nic

pytestmark = pytest.mark.slow

# Fixtures shared with the other networking tests.
procs = qemu_rig.procs
net_guest = qemu_rig.net_guest

A = ("10.99.0.1", "52:54:00:99:00:01")
B = ("10.99.0.2", "52:54:00:99:00:02")


def configure(shell: GuestShell, ip: str) -> None:
    shell.sh(f"ip addr add {ip}/24 dev eth0 && ip link set eth0 up")


def ping(shell: GuestShell, ip: str) -> None:
    out = shell.sh(f"ping -c 3 -W 5 {ip}", timeout=60)
    assert "3 packets received" in out, out


def test_two_guests_on_a_socket_cable_ping_each_other(
    procs: list, net_guest: NetGuest, tmp_path: Path
) -> None:
    cable = tmp_path / "cable.sock"
    sock_a, sock_b = tmp_path / "a.sock", tmp_path / "b.sock"
    serve_net(procs, sock_a, f"socket,listen={cable}")
    serve_net(procs, sock_b, f"socket,connect={cable}")
    a = boot(procs, net_guest, vhost_user_nic(sock_a, A[1]))
    b = boot(procs, net_guest, vhost_user_nic(sock_b, B[1]))
    configure(a, A[0])
    configure(b, B[0])
    ping(a, B[0])
    ping(b, A[0])
    # A TCP stream across: 256 KiB from b to a, checked on both ends.
    a.sh("nc -l -p 7000 > /tmp/in &")
    b.sh("dd if=/dev/urandom of=/tmp/out bs=64k count=4 2>/dev/null")
    # Until a's nc listens, a connection is refused before any byte goes: try again.
    b.sh(f"for i in 1 2 3 4 5; do nc {A[0]} 7000 < /tmp/out && break; sleep 1; done", 90)
    a.sh("wait")
    assert a.sh("sha256sum < /tmp/in").split()[0] == b.sh("sha256sum < /tmp/out").split()[0]
    for shell in (a, b):
        shell.poweroff()


def test_a_guest_against_qemus_own_stream_server(
    procs: list, net_guest: NetGuest, tmp_path: Path
) -> None:
    cable = tmp_path / "cable.sock"
    netdev = f"stream,server=on,addr.type=unix,addr.path={cable}"
    # QEMU first: its stream socket must exist before kvmlite's back-end connects to it.
    qemu_side = qemu_rig.spawn(procs, net_guest, qemu_nic(netdev, A[1]))
    deadline = time.monotonic() + 30
    while not unix_listening(cable):  # the path exists before QEMU listens
        assert time.monotonic() < deadline, "QEMU made no stream socket"
        time.sleep(0.05)
    sock = tmp_path / "k.sock"
    serve_net(procs, sock, f"socket,connect={cable}")
    kvmlite_side = boot(procs, net_guest, vhost_user_nic(sock, B[1]))
    qemu_side.wait_ready()
    configure(qemu_side, A[0])
    configure(kvmlite_side, B[0])
    ping(kvmlite_side, A[0])
    ping(qemu_side, B[0])
    for shell in (qemu_side, kvmlite_side):
        shell.poweroff()

"""Bad host input to ``kvmlite serve net``: each a clear one-line error, nothing left behind,
and a back-end already serving a guest is not disturbed.

(passt dying under a running guest is in test_qemu_net_user.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmlite.testing.netns import NetNs

from . import qemu_rig, test_qemu_net_tap
from .qemu_rig import NetGuest, boot, serve_net, vhost_user_nic
from .test_qemu_net_tap import MAC, PEER_IP, TAP

# Fixtures shared with the other networking tests.
procs = qemu_rig.procs
net_guest = qemu_rig.net_guest
network = test_qemu_net_tap.network  # the tap bridged to a peer namespace


def refused(sock: Path, spec: str, ns: NetNs | None = None, **env: str) -> str:
    """Run ``kvmlite serve net`` expecting exit status 1; its error output."""
    argv = [sys.executable, "-m", "kvmlite.serve", "net", "--socket", str(sock), spec]
    r = subprocess.run(
        ns.argv(argv) if ns is not None else argv,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert r.returncode == 1, f"{spec}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    assert not sock.exists(), f"{spec}: the socket was made anyway"
    return r.stderr


@pytest.mark.slow
def test_a_busy_tap_is_refused_and_its_guest_keeps_its_network(
    procs: list, net_guest: NetGuest, network: tuple[NetNs, NetNs], tmp_path: Path
) -> None:
    switch, _ = network
    sock = tmp_path / "net.sock"
    server = serve_net(procs, sock, f"tap,ifname={TAP}", switch)
    shell = boot(procs, net_guest, vhost_user_nic(sock, MAC))
    shell.sh("ip addr add 10.77.0.2/24 dev eth0 && ip link set eth0 up")
    shell.sh(f"ping -c 1 -W 5 {PEER_IP}")

    err = refused(tmp_path / "second.sock", f"tap,ifname={TAP}", switch)
    assert TAP in err and "busy" in err, err
    # The first back-end and its guest did not notice.
    out = shell.sh(f"ping -c 2 -W 5 {PEER_IP}")
    assert "2 packets received" in out, out
    assert server.poll() is None
    shell.poweroff()


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("tap,ifname=v0", ["v0", "not a tap"]),
        ("tap,ifname=much-too-long-name", ["much-too-long-name", "15"]),
        ("user,hostfwd=tcp::99999-:22", ["99999", "1..65535"]),
        ("user,hostfwd=tcp:2222:22", ["tcp:2222:22"]),
        ("socket,connect=/nonexistent/cable.sock", ["/nonexistent/cable.sock"]),
    ],
)
def test_bad_network_specs_are_refused_before_anything_is_made(
    netns: NetNs, tmp_path: Path, spec: str, words: list[str]
) -> None:
    netns.add_veth("v0", "v1")
    links = netns.ip("-o", "link", "show")
    err = refused(tmp_path / "net.sock", spec, netns)
    assert all(w in err for w in words), err
    assert err.startswith("kvmlite serve:") and len(err.strip().splitlines()) == 1, err
    assert netns.ip("-o", "link", "show") == links  # no interface made or left behind


def test_user_networking_without_passt_says_how_to_get_it(tmp_path: Path) -> None:
    err = refused(tmp_path / "net.sock", "user", PATH="/nonexistent")
    assert "passt" in err and "apt-get install passt" in err, err

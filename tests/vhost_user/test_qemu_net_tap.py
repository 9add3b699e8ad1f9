"""A Linux guest on a tap served by ``kvmlite serve net tap``: ping and TCP both ways.

The network, all inside namespaces the test makes (kvmlite.testing.netns)::

    guest eth0 (10.77.0.2) -- QEMU vhost-user -- kvmlite serve net tap,ifname=kt0
        kt0 -- br0 -- vb   [namespace "switch"]
                      vb -- vp (10.77.0.1)   [namespace "peer": the test's sockets]

Linux's virtio-net driver in a QEMU -accel tcg guest is the judge on one side,
the peer namespace's own kernel TCP/IP stack on the other.  The same test on
QEMU's own ``-netdev tap`` checks the rig itself (a failure there is the
rig's, not kvmlite's).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlite.testing.netns import NetNs, need_root

from . import qemu_rig
from .qemu_rig import GuestShell, NetGuest, boot, qemu_nic, serve_net, vhost_user_nic
from .tcp_peer import TcpPeer

# Fixtures shared with the other networking tests.
procs = qemu_rig.procs
net_guest = qemu_rig.net_guest

pytestmark = pytest.mark.slow

GUEST_IP = "10.77.0.2"
PEER_IP = "10.77.0.1"
MAC = "52:54:00:77:00:02"
TAP = "kt0"
PAYLOAD = 1 << 20
BULK = 32 << 20


def tap_network(switch: NetNs, peer: NetNs) -> None:
    """The tap bridged to a veth whose other end is the peer at PEER_IP."""
    switch.add_tap(TAP)
    switch.add_veth_to("vb", peer, "vp")
    switch.add_bridge("br0", [TAP, "vb"])
    peer.address("vp", f"{PEER_IP}/24")


@pytest.fixture
def network() -> Iterator[tuple[NetNs, NetNs]]:
    """(switch, peer), deleted after the test."""
    need_root()
    with NetNs() as switch, NetNs() as peer:
        tap_network(switch, peer)
        yield switch, peer


def boot_on_tap(
    vmm: str, procs: list, net_guest: NetGuest, switch: NetNs, tmp_path: Path
) -> GuestShell:
    if vmm == "kvmlite":
        sock = tmp_path / "net.sock"
        serve_net(procs, sock, f"tap,ifname={TAP}", switch)
        shell = boot(procs, net_guest, vhost_user_nic(sock, MAC))
    else:  # QEMU opens the tap itself, so it runs in the switch namespace
        nic = qemu_nic(f"tap,ifname={TAP},script=no,downscript=no,vhost=off", MAC)
        shell = boot(procs, net_guest, nic, switch)
    shell.sh(f"ip addr add {GUEST_IP}/24 dev eth0 && ip link set eth0 up")
    return shell


@pytest.mark.parametrize("vmm", ["kvmlite", "qemu"])
def test_guest_on_tap_pings_and_moves_tcp_data_both_ways(
    vmm: str,
    procs: list,
    net_guest: NetGuest,
    network: tuple[NetNs, NetNs],
    tmp_path: Path,
) -> None:
    switch, peer = network
    shell = boot_on_tap(vmm, procs, net_guest, switch, tmp_path)
    out = shell.sh(f"ping -c 3 -W 5 {PEER_IP}", timeout=60)
    assert "3 packets received" in out, out
    assert MAC in peer.ip("neigh", "show", GUEST_IP).lower()

    # guest -> peer: 1 MiB of the guest's random bytes, checksummed on both sides.
    shell.sh(f"dd if=/dev/urandom of=/tmp/up bs=64k count={PAYLOAD >> 16} 2>/dev/null")
    guest_sum = re.search(r"([0-9a-f]{64})", shell.sh("sha256sum /tmp/up")).group(1)
    sink = TcpPeer(peer, PEER_IP, 5001)
    shell.sh(f"nc {PEER_IP} 5001 < /tmp/up", timeout=120)
    assert sink.result()[:2] == (PAYLOAD, guest_sum)

    # peer -> guest: 1 MiB of the host's random bytes.
    data = os.urandom(PAYLOAD)
    source = TcpPeer(peer, PEER_IP, 5002, send=data)
    shell.sh(f"nc {PEER_IP} 5002 < /dev/null > /tmp/down", timeout=120)
    source.result()
    out = shell.sh("wc -c < /tmp/down; sha256sum /tmp/down")
    assert out.split()[:2] == [str(PAYLOAD), hashlib.sha256(data).hexdigest()], out

    # A longer stream in: large (GSO) frames spread over many mergeable buffers.
    source = TcpPeer(peer, PEER_IP, 5003, send=bytes(BULK))
    out = shell.sh(f"net_blast recv {PEER_IP} 5003", timeout=120)
    source.result()
    assert f"BLAST: received={BULK}" in out, out
    # Linux's driver counts each receive it finds malformed (a frame whose buffers are
    # not all in the used ring, a length past its buffer) as a length error ("frame" in
    # /proc/net/dev) and drops it; TCP's retransmissions hide that from the data.  ("drop"
    # also counts frames of protocols this guest lacks, such as IPv6: not checked.)
    assert rx_errors(shell) == {"errs": 0, "frame": 0}
    shell.poweroff()


def rx_errors(shell: GuestShell) -> dict[str, int]:
    """eth0's receive error counters from the guest's /proc/net/dev."""
    line = shell.sh("grep eth0: /proc/net/dev").split(":", 1)[1].split()
    # receive: bytes packets errs drop fifo frame compressed multicast; then transmit
    return {"errs": int(line[2]), "frame": int(line[5])}


def test_two_queue_pairs_on_a_multiqueue_tap(
    procs: list, net_guest: NetGuest, netns: NetNs, tmp_path: Path
) -> None:
    """``tap,queues=2`` and a two-CPU guest: Linux sets up both queue pairs and moves
    four streams at once.  (Which pair each frame took is not visible here: the guest
    has no ethtool -S, the tap no per-queue counters.)"""
    netns.ip("tuntap", "add", "dev", "kq0", "mode", "tap", "multi_queue")
    netns.address("kq0", f"{PEER_IP}/24")
    sock = tmp_path / "net.sock"
    serve_net(procs, sock, "tap,ifname=kq0,queues=2", netns)
    shell = boot(procs, net_guest, vhost_user_nic(sock, MAC, queue_pairs=2), cpus=2)
    shell.sh(f"ip addr add {GUEST_IP}/24 dev eth0 && ip link set eth0 up")
    assert shell.sh("ls /sys/class/net/eth0/queues").split() == ["rx-0", "rx-1", "tx-0", "tx-1"]
    # The tap spreads flows over its queues by hash, the guest's XPS sends from a CPU's own.
    size = 8 << 20
    peers = [TcpPeer(netns, PEER_IP, 7000 + i, send=bytes(size)) for i in range(4)]
    out = shell.sh(
        f"for p in 7000 7001 7002 7003; do net_blast recv {PEER_IP} $p & done; wait", timeout=120
    )
    assert out.count(f"BLAST: received={size}") == 4, out
    for p in peers:
        p.result()
    assert rx_errors(shell) == {"errs": 0, "frame": 0}
    shell.poweroff()

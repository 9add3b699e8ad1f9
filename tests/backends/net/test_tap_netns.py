"""Helpers for the tap tests: a network namespace per test, and the peer host behind the tap.

Every tap is created inside a namespace the test makes (kvmlite.testing.netns);
the tap code runs through ``NetNs.run``, on a short-lived thread that
``setns()``-es into it (a network namespace is per thread, and a tap belongs to
the namespace of the thread that created it). The fds work from any thread
afterwards. Commands (``ip``, ``ping``) run through ``ip netns exec``. The
host's own namespace is never touched.

The peer 10.0.0.2 behind the tap is a ``kvmlite.testing.frames.Responder``
(``peer()``): it answers ARP, ICMP echo and TCP SYNs with hand-made frames,
so the kernel's own stack judges them.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from kvmlite.testing.frames import Responder
from kvmlite.testing.netns import NetNs, need_root

HOST_IP = bytes([10, 0, 0, 1])
PEER_IP = bytes([10, 0, 0, 2])
PEER_MAC = bytes.fromhex("525400abcdef")


def netns_no_ipv6() -> Iterator[NetNs]:
    """A NetNs with IPv6 off for one test (``_ns = pytest.fixture(netns_no_ipv6, name="netns")``):
    IPv6's router solicitations and MLD reports would arrive on the taps at random
    moments and upset frame counts."""
    need_root()
    with NetNs(ipv6=False) as ns:
        yield ns


_ns = pytest.fixture(netns_no_ipv6, name="netns")


def peer(hdr_len: int = 0) -> Responder:
    """The host PEER_IP / PEER_MAC behind the tap (``hdr_len``: a virtio-net header)."""
    return Responder(PEER_MAC, PEER_IP, hdr_len)


def test_namespace_is_private(netns: NetNs) -> None:
    """A tap made through the helper exists in the test's namespace only."""
    netns.sh("ip", "tuntap", "add", "kvltest0", "mode", "tap")
    assert "kvltest0" in netns.sh("ip", "link", "show").stdout
    host = subprocess.run(["ip", "link", "show"], capture_output=True, text=True).stdout
    assert "kvltest0" not in host
    assert netns.run(socket.if_nametoindex, "kvltest0") > 0  # run() really is inside
    with pytest.raises(OSError):
        socket.if_nametoindex("kvltest0")

"""Helpers for the tap tests: a network namespace per test, and the peer host behind the tap.

Every tap is created inside a namespace the test makes (``ip netns add``);
the tap code runs on a short-lived thread that ``setns()``-es into it (a
network namespace is per thread, and a tap belongs to the namespace of the
thread that created it). The fds work from any thread afterwards. Commands
(``ip``, ``ping``) run through ``ip netns exec``. The host's own namespace is
never touched.

The peer 10.0.0.2 behind the tap is a ``kvmlite.testing.frames.Responder``
(``peer()``): it answers ARP, ICMP echo and TCP SYNs with hand-made frames,
so the kernel's own stack judges them.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from kvmlite.testing.frames import Responder

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()

HOST_IP = bytes([10, 0, 0, 1])
PEER_IP = bytes([10, 0, 0, 2])
PEER_MAC = bytes.fromhex("525400abcdef")


class NetNs:
    """A network namespace of the test's own, deleted by ``close()``."""

    def __init__(self) -> None:
        self.name = f"kvl-tap-{os.getpid()}-{next(_counter)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        # No IPv6: its router solicitations and MLD reports would arrive on
        # the taps at random moments and upset frame counts.
        # (/proc/sys/net shows the namespace of the process reading it.)
        for conf in ("all", "default"):
            path = f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"
            self.sh("sh", "-c", f"[ ! -e {path} ] || echo 1 > {path}")

    def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``fn(*args, **kwargs)`` on a thread inside the namespace."""
        result: list[T] = []
        error: list[BaseException] = []

        def body() -> None:
            fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            try:
                result.append(fn(*args, **kwargs))
            except BaseException as e:  # handed to the caller's thread
                error.append(e)

        t = threading.Thread(target=body)
        t.start()
        t.join()
        if error:
            raise error[0]
        return result[0]

    def cmd(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def sh(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*argv), capture_output=True, text=True, check=check)

    def stat(self, ifname: str, counter: str) -> int:
        return int(self.sh("cat", f"/sys/class/net/{ifname}/statistics/{counter}").stdout)

    def up(self, ifname: str, addr: str = "10.0.0.1/24") -> None:
        self.sh("ip", "addr", "add", addr, "dev", ifname)
        self.sh("ip", "link", "set", ifname, "up")

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def netns_scope() -> Iterator[NetNs]:
    """A NetNs for one test (use: ``_ns = pytest.fixture(netns_scope, name="netns")``)."""
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces and taps needs root (CAP_NET_ADMIN)")
    ns = NetNs()
    yield ns
    ns.close()


_ns = pytest.fixture(netns_scope, name="netns")


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

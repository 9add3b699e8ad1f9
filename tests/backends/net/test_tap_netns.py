"""Helpers for the tap tests: a network namespace per test, and a tiny hand-made IPv4 host.

Every tap is created inside a namespace the test makes (``ip netns add``);
the tap code runs on a short-lived thread that ``setns()``-es into it (a
network namespace is per thread, and a tap belongs to the namespace of the
thread that created it). The fds work from any thread afterwards. Commands
(``ip``, ``ping``) run through ``ip netns exec``. The host's own namespace is
never touched.

``Responder`` plays the peer 10.0.0.2 behind the tap: it answers ARP
requests, ICMP echo requests and TCP SYNs with frames built here with
struct (RFC 826, RFC 791, RFC 792, RFC 793), so the kernel's own stack
judges them.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()

HOST_IP = bytes([10, 0, 0, 1])
PEER_IP = bytes([10, 0, 0, 2])
PEER_MAC = bytes.fromhex("525400abcdef")
BROADCAST = b"\xff" * 6


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


# -- frames ------------------------------------------------------------------------------------


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0, src, dst)
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def tcp(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
) -> bytes:
    """A TCP segment with its checksum; a SYN carries an MSS option of 1460."""
    opts = struct.pack("!BBH", 2, 4, 1460) if flags & 0x02 else b""
    off = (20 + len(opts)) // 4
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, 65535, 0, 0)
    seg = hdr + opts + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(seg))
    return seg[:16] + struct.pack("!H", checksum(pseudo + seg)) + seg[18:]


class Responder:
    """The host 10.0.0.2 / PEER_MAC: answers ARP, ping and TCP SYN frames it is given."""

    def __init__(self, mac: bytes = PEER_MAC, hdr_len: int = 0) -> None:
        self.mac = mac
        self.hdr_len = hdr_len  # a virtio-net header in front of every frame
        self.answered: list[str] = []

    def answer(self, frame: bytes) -> bytes | None:
        """The reply frame (with a zero header when hdr_len), or None."""
        f = frame[self.hdr_len :]
        if len(f) < 14:
            return None
        dst, src, etype = f[:6], f[6:12], struct.unpack("!H", f[12:14])[0]
        if etype == 0x0806 and len(f) >= 42:
            op, sha, spa, tpa = struct.unpack("!6xH6s4s6x4s", f[14:42])
            if op == 1 and tpa == PEER_IP:
                arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, self.mac, PEER_IP, sha, spa)
                self.answered.append("arp")
                return self._eth(src, 0x0806, arp)
        if etype == 0x0800 and dst == self.mac and len(f) >= 34:
            ihl = (f[14] & 15) * 4
            proto, sip, dip = f[23], f[26:30], f[30:34]
            body = f[14 + ihl : 14 + struct.unpack("!H", f[16:18])[0]]
            if dip != PEER_IP:
                return None
            if proto == 1 and body[:1] == b"\x08":  # ICMP echo request
                reply = b"\0\0\0\0" + body[4:]
                reply = reply[:2] + struct.pack("!H", checksum(reply)) + reply[4:]
                self.answered.append("ping")
                return self._eth(src, 0x0800, ipv4(PEER_IP, sip, 1, reply))
            if proto == 6 and len(body) >= 20 and body[13] & 0x3F == 0x02:  # a bare SYN
                sport, dport, seq = struct.unpack("!HHI", body[:8])
                seg = tcp(PEER_IP, sip, dport, sport, 1000, seq + 1, 0x12)
                self.answered.append("syn")
                return self._eth(src, 0x0800, ipv4(PEER_IP, sip, 6, seg))
        return None

    def _eth(self, dst: bytes, etype: int, payload: bytes) -> bytes:
        return bytes(self.hdr_len) + dst + self.mac + struct.pack("!H", etype) + payload


def test_namespace_is_private(netns: NetNs) -> None:
    """A tap made through the helper exists in the test's namespace only."""
    netns.sh("ip", "tuntap", "add", "kvltest0", "mode", "tap")
    assert "kvltest0" in netns.sh("ip", "link", "show").stdout
    host = subprocess.run(["ip", "link", "show"], capture_output=True, text=True).stdout
    assert "kvltest0" not in host
    assert netns.run(socket.if_nametoindex, "kvltest0") > 0  # run() really is inside
    with pytest.raises(OSError):
        socket.if_nametoindex("kvltest0")

"""Network namespaces for the real-networking tests: made by the test, always deleted.

Every interface these tests create (taps, veth pairs, bridges) lives in a
namespace made here (``ip netns add``, ip-netns(8)), so nothing touches the
host's own network.  Processes run inside with ``NetNs.argv`` (``ip netns
exec``); the test process itself gets sockets inside with ``NetNs.socket``:
a short-lived thread joins the namespace with setns(2) (which changes only
the calling thread, see setns(2) and namespaces(7)), opens the socket and
exits; the socket stays in that namespace for its whole life and can be used
from any thread.

Deleting a namespace first kills what still runs in it (``ip netns pids``:
only processes the test itself started there), so no peer outlives a test.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import itertools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

CLONE_NEWNET = 0x40000000
#: tcp(7): bytes in the send queue not yet acknowledged by the peer (TIOCOUTQ).
SIOCOUTQ = 0x5411
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()


def need_root() -> None:
    """Skip (saying why) where the test cannot create namespaces and interfaces."""
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_NET_ADMIN) to create network namespaces")


class NetNs:
    """One network namespace, named ``kl<pid>n<k>``; loopback is up."""

    def __init__(self) -> None:
        self.name = f"kl{os.getpid()}n{next(_counter)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.ip("link", "set", "lo", "up")

    def argv(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` as a command line that runs inside this namespace."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def ip(self, *args: str) -> str:
        """Run ``ip -n NAME ARGS``; its output, or an AssertionError with its stderr."""
        r = subprocess.run(["ip", "-n", self.name, *args], capture_output=True, text=True)
        assert r.returncode == 0, f"ip {' '.join(args)}: {r.stderr.strip()}"
        return r.stdout

    def add_tap(self, ifname: str) -> None:
        """A persistent tap owned by nobody in particular; it has carrier only once opened."""
        self.ip("tuntap", "add", "dev", ifname, "mode", "tap")

    def address(self, ifname: str, cidr: str) -> None:
        """Give ``ifname`` the address ``cidr`` and bring it up."""
        self.ip("addr", "add", cidr, "dev", ifname)
        self.ip("link", "set", ifname, "up")

    def add_veth(self, a: str, b: str) -> None:
        """A veth pair with both ends here, up."""
        self.ip("link", "add", a, "type", "veth", "peer", "name", b)
        self.ip("link", "set", a, "up")
        self.ip("link", "set", b, "up")

    def add_veth_to(self, a: str, other: NetNs, b: str) -> None:
        """A veth pair: ``a`` here, ``b`` in ``other``; both up."""
        self.ip("link", "add", a, "type", "veth", "peer", "name", b, "netns", other.name)
        self.ip("link", "set", a, "up")
        other.ip("link", "set", b, "up")

    def add_bridge(self, name: str, ports: Sequence[str], cidr: str | None = None) -> None:
        """A bridge over ``ports`` (all up), with ``cidr`` on the bridge itself if given."""
        self.ip("link", "add", name, "type", "bridge")
        for port in ports:
            self.ip("link", "set", port, "master", name)
            self.ip("link", "set", port, "up")
        if cidr is not None:
            self.ip("addr", "add", cidr, "dev", name)
        self.ip("link", "set", name, "up")

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket that lives in this namespace."""
        result: list[Any] = []

        def enter_and_open() -> None:
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns into {self.name}: {os.strerror(err)}")
                finally:
                    os.close(fd)
                result.append(socket.socket(family, kind))
            except BaseException as e:  # handed to the caller's thread
                result.append(e)

        t = threading.Thread(target=enter_and_open, name=f"setns-{self.name}")
        t.start()
        t.join()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    def pids(self) -> list[int]:
        r = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(p) for p in r.stdout.split()]

    def delete(self) -> None:
        """Kill what the test left running inside, then delete the namespace."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def __enter__(self) -> NetNs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()


@pytest.fixture
def netns() -> Iterator[NetNs]:
    """A fresh network namespace, deleted after the test."""
    need_root()
    ns = NetNs()
    try:
        yield ns
    finally:
        ns.delete()
        assert (
            ns.name
            not in subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True
            ).stdout.split()
        ), f"namespace {ns.name} was left behind"


class TcpPeer:
    """One TCP connection accepted on ``addr:port`` inside a namespace, served on a thread.

    The peer first sends ``send`` and waits until the other side's kernel acknowledged
    all of it (the send queue, SIOCOUTQ in tcp(7), is empty), then shuts its write side
    and reads until the other side's EOF.  ``result()`` gives what it read (count,
    SHA-256) and the seconds from the accept to that EOF; ``sent_seconds`` the seconds
    from the accept until all of ``send`` was acknowledged."""

    def __init__(self, ns: NetNs, addr: str, port: int, send: bytes = b"") -> None:
        self.listener = ns.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((addr, port))
        self.listener.listen(1)
        self.listener.settimeout(120)
        self.send = send
        self.received = 0
        self.digest = hashlib.sha256()
        self.accepted_at = 0.0
        self.eof_at = 0.0
        self.drained_at = 0.0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True, name=f"peer-{port}")
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            self.accepted_at = time.monotonic()
            with conn:
                conn.settimeout(120)
                if self.send:
                    conn.sendall(self.send)
                    while fcntl.ioctl(conn, SIOCOUTQ, b"\0\0\0\0") != bytes(4):
                        time.sleep(0.0005)
                    self.drained_at = time.monotonic()
                    conn.shutdown(socket.SHUT_WR)
                while data := conn.recv(1 << 16):
                    self.received += len(data)
                    self.digest.update(data)
                self.eof_at = time.monotonic()
        except BaseException as e:  # handed to result()
            self.error = e
        finally:
            self.listener.close()

    @property
    def sent_seconds(self) -> float:
        return self.drained_at - self.accepted_at

    def result(self, timeout: float = 120) -> tuple[int, str, float]:
        """(bytes read, their SHA-256, seconds from accept to EOF), once the peer is done."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the peer's connection did not end"
        if self.error is not None:
            raise AssertionError(f"peer failed: {self.error!r}") from self.error
        return self.received, self.digest.hexdigest(), self.eof_at - self.accepted_at

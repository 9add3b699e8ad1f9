"""Network namespaces for networking tests: made by the test, always deleted.

Every interface a test creates (taps, veth pairs, bridges) lives in a
namespace made here (``ip netns add``, ip-netns(8)), so nothing touches the
host's own network.  Commands run inside through ``ip netns exec``
(``NetNs.argv``, ``NetNs.sh``) or ``ip -n`` (``NetNs.ip``).  Python code of the
test process runs inside with ``NetNs.run``: a short-lived thread joins the
namespace with setns(2), which changes only the calling thread (setns(2),
namespaces(7)), calls the function and exits.  What it made there (a socket,
a tap's file descriptors) stays in that namespace for its whole life and can
be used from any thread; ``NetNs.socket`` is the common case.

Deleting a namespace first kills what still runs in it (``ip netns pids``:
only processes the test itself started there), so no peer outlives a test,
and then checks that it is gone.  ``netns_scope`` is the body of a pytest
fixture: ``netns = pytest.fixture(netns_scope, name="netns")``.

Creating namespaces needs CAP_SYS_ADMIN and CAP_NET_ADMIN (root here and in CI).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000  # <sched.h>: setns(2)'s nstype for a network namespace
NEEDS_ROOT = "needs root (CAP_NET_ADMIN) to create network namespaces"

_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()


def need_root() -> None:
    """Skip the calling pytest test (saying why) where it cannot create namespaces."""
    if os.geteuid() != 0:
        import pytest  # only a test skips; the module itself does not need pytest

        pytest.skip(NEEDS_ROOT)


class NetNs:
    """One network namespace, named ``<prefix><pid>n<k>``, with loopback up.

    ``ipv6=False`` turns IPv6 off inside (for all interfaces, and the default for new
    ones): its router solicitations and MLD reports would otherwise arrive on taps at
    random moments and upset tests that count frames."""

    def __init__(self, prefix: str = "kvl", *, ipv6: bool = True) -> None:
        self.name = f"{prefix}{os.getpid()}n{next(_counter)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        try:
            self.ip("link", "set", "lo", "up")
            if not ipv6:
                # /proc/sys/net shows the namespace of the process reading it.
                for conf in ("all", "default"):
                    path = f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"
                    self.sh("sh", "-c", f"[ ! -e {path} ] || echo 1 > {path}")
        except BaseException:
            self.delete()
            raise

    # -- running things inside ---------------------------------------------------------------

    def argv(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` as a command line that runs inside this namespace."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def sh(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside; its result (stdout and stderr captured as text)."""
        return subprocess.run(self.argv(cmd), capture_output=True, text=True, check=check)

    def ip(self, *args: str) -> str:
        """Run ``ip -n NAME ARGS``; its output, or an AssertionError with its stderr."""
        r = subprocess.run(["ip", "-n", self.name, *args], capture_output=True, text=True)
        assert r.returncode == 0, f"ip {' '.join(args)}: {r.stderr.strip()}"
        return r.stdout

    def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``fn(*args, **kwargs)`` on a thread inside the namespace; its result or exception."""
        result: list[T] = []
        error: list[BaseException] = []

        def body() -> None:
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns into {self.name}: {os.strerror(err)}")
                finally:
                    os.close(fd)
                result.append(fn(*args, **kwargs))
            except BaseException as e:  # handed to the caller's thread
                error.append(e)

        t = threading.Thread(target=body, name=f"setns-{self.name}")
        t.start()
        t.join()
        if error:
            raise error[0]
        return result[0]

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket that lives in this namespace."""
        return self.run(socket.socket, family, kind)

    # -- interfaces --------------------------------------------------------------------------

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

    def stat(self, ifname: str, counter: str) -> int:
        """One of ``ifname``'s counters (``/sys/class/net/IF/statistics/COUNTER``)."""
        return int(self.sh("cat", f"/sys/class/net/{ifname}/statistics/{counter}").stdout)

    # -- the end ------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """The processes running inside."""
        r = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(p) for p in r.stdout.split()]

    def delete(self) -> None:
        """Kill what the test left running inside, then delete the namespace; an
        AssertionError if it is still there."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert self.name not in listed.split(), f"namespace {self.name} was left behind"

    def __enter__(self) -> NetNs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()


def netns_scope() -> Iterator[NetNs]:
    """A fresh NetNs for one pytest test, deleted after it; skips (saying why) without root.
    Use: ``netns = pytest.fixture(netns_scope, name="netns")``."""
    need_root()
    with NetNs() as ns:
        yield ns

"""Every way opening a tap fails says what is wrong and what to do, and leaves nothing open."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_tap_netns import netns_no_ipv6

from kvmlite.backends.net import tap_open
from kvmlite.backends.net.tap import TapBackend
from kvmlite.errors import ConfigError
from kvmlite.testing.netns import NetNs

_ns = pytest.fixture(netns_no_ipv6, name="netns")


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def refused(ns: NetNs, fn: Callable[[], object]) -> str:
    """The ConfigError message ``fn`` raises inside ``ns``; no fd may stay open."""
    before = open_fds()

    def body() -> str:
        with pytest.raises(ConfigError) as e:
            fn()
        return str(e.value)

    msg = ns.run(body)
    assert open_fds() <= before, "a failed open left an fd behind"
    return msg


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("a" * 16, "at most 15"),
        ("bad/name", "not valid"),
        ("two words", "not valid"),
        ("tap%d", "not valid"),
        ("", "not valid"),
        ("..", "not valid"),
        ("ta:p", "not valid"),
        ("-tap", "not valid"),
    ],
)
def test_bad_interface_names(name: str, says: str) -> None:
    # Refused before any system call, so no namespace is needed.
    with pytest.raises(ConfigError, match=says) as e:
        TapBackend.open(name)
    assert repr(name) in str(e.value)


def test_longest_name_is_fine(netns: NetNs) -> None:
    [b] = netns.run(TapBackend.open, "k" * 15)
    assert b.ifname == "k" * 15
    b.close()


@pytest.mark.parametrize("queues", [0, -1, 257])
def test_bad_queue_counts(queues: int) -> None:
    with pytest.raises(ConfigError, match="queues"):
        TapBackend.open("kvlq0", queues=queues)


def test_missing_tun_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tap_open, "TUN_PATH", str(tmp_path / "tun"))
    with pytest.raises(ConfigError, match="modprobe tun"):
        TapBackend.open("kvlx0")


CHILD = """
import sys
from kvmlite.backends.net.tap import TapBackend
from kvmlite.errors import ConfigError
try:
    TapBackend.open(sys.argv[1])
except ConfigError as e:
    print(e)
    sys.exit(0)
sys.exit('opened although it should not have')
"""


def in_child(ns: NetNs, setpriv: list[str], ifname: str) -> str:
    res = ns.sh("setpriv", *setpriv, "--", sys.executable, "-c", CHILD, ifname, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_without_cap_net_admin(netns: NetNs) -> None:
    out = in_child(netns, ["--inh-caps=-all", "--bounding-set=-all"], "kvlperm0")
    assert "needs CAP_NET_ADMIN" in out and "ip tuntap add NAME mode tap user" in out
    assert netns.sh("ip", "link", "show", "kvlperm0", check=False).returncode != 0


def test_attaching_another_users_tap_without_cap_net_admin(netns: NetNs) -> None:
    netns.sh("ip", "tuntap", "add", "kvlown0", "mode", "tap", "vnet_hdr", "user", "1")
    out = in_child(netns, ["--inh-caps=-all", "--bounding-set=-all"], "kvlown0")
    assert "needs CAP_NET_ADMIN" in out


def test_own_persistent_tap_without_cap_net_admin(netns: NetNs) -> None:
    """What the EPERM message advises works: a tap owned by the user needs no privilege."""
    netns.sh("ip", "tuntap", "add", "kvlmine0", "mode", "tap", "user", "0")
    code = "from kvmlite.backends.net.tap import TapBackend; print(TapBackend.open('kvlmine0'))"
    res = netns.sh(
        "setpriv", "--inh-caps=-all", "--bounding-set=-all", "--", sys.executable, "-c", code
    )
    assert "TapBackend" in res.stdout


def test_no_access_to_dev_net_tun(netns: NetNs) -> None:
    out = in_child(netns, ["--reuid=65534", "--regid=65534", "--clear-groups"], "kvlnobody0")
    assert "no permission to open /dev/net/tun" in out


def test_busy_single_queue_tap(netns: NetNs) -> None:
    [b] = netns.run(TapBackend.open, "kvlbusy0")
    try:
        msg = refused(netns, lambda: TapBackend.open("kvlbusy0"))
        assert "kvlbusy0 is busy" in msg
    finally:
        b.close()
    [b] = netns.run(TapBackend.open, "kvlbusy0")  # free again once closed
    b.close()


def test_multiqueue_mismatch(netns: NetNs) -> None:
    netns.sh("ip", "tuntap", "add", "kvlsq0", "mode", "tap")
    msg = refused(netns, lambda: TapBackend.open("kvlsq0", queues=2))
    assert "exists with other flags" in msg and "multi_queue" in msg
    netns.sh("ip", "tuntap", "add", "kvlmq1", "mode", "tap", "multi_queue")
    msg = refused(netns, lambda: TapBackend.open("kvlmq1"))
    assert "exists with other flags" in msg
    backends = netns.run(TapBackend.open, "kvlmq1", queues=3)  # the right way attaches
    assert len(backends) == 3
    for b in backends:
        b.close()
    assert netns.sh("ip", "link", "show", "kvlmq1").returncode == 0  # persistent: still there


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (None, "lo exists and is something else"),  # the loopback device every namespace has
        (["ip", "tuntap", "add", "kvlnt0", "mode", "tun"], "a tun (layer 3) device"),
        (["ip", "link", "add", "kvlnt0", "type", "veth", "peer", "kvlnt1"], "a veth device"),
    ],
)
def test_name_of_something_that_is_not_a_tap(
    netns: NetNs, make: list[str] | None, says: str
) -> None:
    name = "lo" if make is None else "kvlnt0"
    if make:
        netns.sh(*make)
    msg = refused(netns, lambda: TapBackend.open(name))
    assert says in msg and "not a tap" in msg

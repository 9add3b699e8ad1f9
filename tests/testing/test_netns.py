"""kvmlite.testing.netns: what a test makes stays inside its namespace, and nothing outlives it."""

from __future__ import annotations

import socket
import subprocess

import pytest

from kvmlite.testing.netns import NetNs, need_root, netns_scope

netns = pytest.fixture(netns_scope, name="netns")


def listed() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()


def host_links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout


def test_interfaces_and_sockets_live_inside(netns: NetNs) -> None:
    before = host_links()
    netns.add_veth("kvla0", "kvlb0")
    netns.address("kvla0", "10.66.0.1/24")
    netns.add_tap("kvlt0")
    netns.add_bridge("kvlbr0", ["kvlt0"], "10.67.0.1/24")
    links = netns.ip("-o", "link", "show")
    assert all(name in links for name in ("kvla0", "kvlb0", "kvlt0", "kvlbr0"))
    assert "10.66.0.1/24" in netns.sh("ip", "-o", "addr", "show", "kvla0").stdout
    assert host_links() == before  # the host's own namespace did not change
    s = netns.socket()
    with s:
        s.bind(("10.66.0.1", 0))  # the address exists only inside
    assert netns.run(socket.if_nametoindex, "kvla0") > 0
    with pytest.raises(OSError):
        socket.if_nametoindex("kvla0")


def test_veth_to_another_namespace_carries_traffic(netns: NetNs) -> None:
    with NetNs() as other:
        netns.add_veth_to("kvlx0", other, "kvly0")
        netns.address("kvlx0", "10.68.0.1/24")
        other.address("kvly0", "10.68.0.2/24")
        assert netns.sh("ping", "-c1", "-W3", "10.68.0.2").returncode == 0
        assert netns.stat("kvlx0", "tx_packets") > 0
    assert other.name not in listed()


def test_delete_kills_what_runs_inside_and_removes_it() -> None:
    need_root()
    ns = NetNs(prefix="kvltest")
    proc = subprocess.Popen(ns.argv(["sleep", "60"]))
    try:
        assert ns.name in listed() and ns.pids() == [proc.pid]
        ns.delete()
        assert proc.wait(5) < 0  # killed, not left running
        assert ns.name not in listed()
    finally:
        proc.kill()
        proc.wait()
        if ns.name in listed():  # an assertion above failed before the delete
            ns.delete()


def test_run_hands_back_the_exception(netns: NetNs) -> None:
    def fail() -> None:
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        netns.run(fail)


def test_ipv6_off(netns: NetNs) -> None:
    on = netns.sh("cat", "/proc/sys/net/ipv6/conf/default/disable_ipv6", check=False)
    with NetNs(ipv6=False) as off:
        value = off.sh("cat", "/proc/sys/net/ipv6/conf/default/disable_ipv6", check=False)
    if on.returncode != 0:
        pytest.fail("this kernel has no IPv6; the test needs it to say anything")
    assert (on.stdout.strip(), value.stdout.strip()) == ("0", "1")

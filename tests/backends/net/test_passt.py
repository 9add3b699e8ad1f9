"""PasstBackend against the real passt, without a guest: hand-built frames in, passt's answers out.

Every test runs passt inside a network namespace it creates (``ip netns
add``) with a veth pair carrying 10.9.0.2/24 and a default route via
10.9.0.1, so passt finds its template interface there and nothing touches
the host's own network. The test process plays the guest: it sends
Ethernet frames built with struct (ARP, IPv4/UDP/BOOTP, TCP) over the
backend and checks the frames passt sends back, as a guest's driver would
see them.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest

from kvmlite.backends.net.hostfwd import parse_hostfwd
from kvmlite.backends.net.passt import PasstBackend
from kvmlite.devices.virtio.net import VirtioNet
from kvmlite.devices.virtio.net_spec import VNET_HDR_LEN
from kvmlite.errors import ConfigError
from kvmlite.testing import attach_drivers, bytearray_memory
from kvmlite.testing.frames import (
    ACK,
    BROADCAST,
    ETH_P_IP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SYN,
    Tcp,
    arp_request,
    dhcp_discover,
    dhcp_options,
    eth,
    ip4,
    ipv4,
    ipv4_of,
    parse_tcp,
    tcp,
)
from kvmlite.testing.netns import NetNs, need_root

GUEST_MAC = bytes.fromhex("525400123456")
GUEST_IP = "10.9.0.2"  # what passt copies from the namespace's veth
GATEWAY = "10.9.0.1"
DNS = "10.9.0.53"  # given with -D so the test does not depend on /etc/resolv.conf


# -- frames -----------------------------------------------------------------------------------


def to_gateway(mac: bytes, segment: bytes) -> bytes:
    packet = ipv4(GUEST_IP, GATEWAY, IPPROTO_TCP, segment, ident=1, dont_fragment=True)
    return eth(mac, GUEST_MAC, ETH_P_IP, packet)


def to_gateway_tcp(mac: bytes, seq: int, ack: int, flags: int) -> bytes:
    return to_gateway(mac, tcp(GUEST_IP, GATEWAY, 40000, 8080, seq, ack, flags))


def arp_for(target: str) -> bytes:
    return arp_request(GUEST_MAC, GUEST_IP, target)


def tcp_of(frame: bytes) -> Tcp | None:
    """The TCP segment an IPv4 frame carries, or None."""
    p = ipv4_of(frame)
    return parse_tcp(p.payload) if p is not None and p.proto == IPPROTO_TCP else None


def offer_options(frame: bytes) -> tuple[bytes, dict[int, bytes]]:
    """The BOOTP message of a DHCP frame from passt, and its options."""
    p = ipv4_of(frame)
    assert p is not None and p.proto == IPPROTO_UDP
    bootp = p.payload[8:]
    opts = dhcp_options(bootp)
    assert opts is not None, "no DHCP magic cookie"
    return bootp, opts


# -- the rig ----------------------------------------------------------------------------------


@pytest.fixture
def netns() -> Iterator[NetNs]:
    """A namespace like a host on 10.9.0.0/24 with a default route; deleted afterwards."""
    need_root()
    with NetNs() as ns:
        ns.add_veth("v0", "v1")
        ns.address("v0", f"{GUEST_IP}/24")
        ns.ip("route", "add", "default", "via", GATEWAY)
        yield ns


def in_ns(ns: NetNs) -> tuple[str, ...]:
    return tuple(ns.argv([]))


@pytest.fixture
def start(netns: NetNs) -> Iterator[Callable[..., PasstBackend]]:
    started: list[PasstBackend] = []

    def _start(*rules: str, extra: tuple[str, ...] = ()) -> PasstBackend:
        b = PasstBackend.start(
            [parse_hostfwd(r) for r in rules],
            extra_args=("-D", DNS, *extra),
            command_prefix=in_ns(netns),
            name="net-test",
        )
        started.append(b)
        return b

    yield _start
    for b in started:
        b.close()


def wait_frame(b: PasstBackend, want: Callable[[bytes], bool], timeout: float = 5.0) -> bytes:
    """Run the VMM's loop for ``b`` until a frame ``want`` accepts arrives; others are skipped."""
    deadline = time.monotonic() + timeout
    seen = 0
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([b.fileno()], [], [], left)[0]:
            break
        b.service()
        for f in b.recv_frames():
            seen += 1
            if want(f):
                return f
    raise AssertionError(f"no such frame from passt within {timeout} s ({seen} others)")


def run_in_ns(ns: NetNs, code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*in_ns(ns), sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def passt_mac(b: PasstBackend) -> bytes:
    """passt's own MAC, learned the way a guest learns it: ARP for the gateway."""
    b.send(arp_for(GATEWAY))
    reply = wait_frame(b, lambda f: f[12:14] == b"\x08\x06")
    return reply[22:28]


# -- the tests --------------------------------------------------------------------------------


def test_dhcp_offer_carries_address_router_dns(start: Callable[..., PasstBackend]) -> None:
    b = start()
    b.send(dhcp_discover(GUEST_MAC, 0x1234ABCD))

    def is_offer(f: bytes) -> bool:
        p = ipv4_of(f)
        return p is not None and p.proto == IPPROTO_UDP and p.payload[:4] == b"\x00\x43\x00\x44"

    offer = wait_frame(b, is_offer)
    bootp, opts = offer_options(offer)
    assert bootp[0] == 2  # BOOTREPLY
    assert struct.unpack_from(">I", bootp, 4)[0] == 0x1234ABCD
    assert bootp[28:34] == GUEST_MAC
    assert bootp[16:20] == ip4(GUEST_IP)  # yiaddr
    assert opts[53] == b"\x02"  # DHCPOFFER
    assert opts[1] == ip4("255.255.255.0")
    assert opts[3] == ip4(GATEWAY)
    assert opts[6] == ip4(DNS)
    assert offer[0:6] in (GUEST_MAC, BROADCAST)


def test_arp_for_the_gateway_is_answered(start: Callable[..., PasstBackend]) -> None:
    b = start()
    b.send(arp_for(GATEWAY))
    reply = wait_frame(b, lambda f: f[12:14] == b"\x08\x06")
    htype, ptype, hlen, plen, op = struct.unpack_from(">HHBBH", reply, 14)
    assert (htype, ptype, hlen, plen, op) == (1, ETH_P_IP, 6, 4, 2)
    sha, spa, tha, tpa = reply[22:28], reply[28:32], reply[32:38], reply[38:42]
    assert spa == ip4(GATEWAY) and tha == GUEST_MAC and tpa == ip4(GUEST_IP)
    assert reply[0:6] == GUEST_MAC and reply[6:12] == sha
    assert sha[0] & 1 == 0  # a unicast address the guest can send to


def test_hostfwd_connect_reaches_the_guest_port_as_a_syn(
    start: Callable[..., PasstBackend], netns: NetNs
) -> None:
    b = start("tcp::2222-:22")
    b.send(arp_for(GATEWAY))  # passt learns the guest's MAC from what it sends
    wait_frame(b, lambda f: f[12:14] == b"\x08\x06")
    client = run_in_ns(
        netns,
        """
        import socket, time
        s = socket.create_connection(("127.0.0.1", 2222), timeout=5)
        print("connected", flush=True)
        time.sleep(10)
        """,
    )
    try:

        def is_syn(f: bytes) -> bool:
            seg = tcp_of(f)
            return seg is not None and seg.flags & SYN > 0

        syn = wait_frame(b, is_syn)
        p, seg = ipv4_of(syn), tcp_of(syn)
        assert p is not None and seg is not None
        assert seg.dport == 22 and seg.flags & (SYN | ACK) == SYN
        assert syn[0:6] == GUEST_MAC
        assert p.dst == ip4(GUEST_IP)
        assert p.src == ip4(GATEWAY)  # a loopback source is shown to the guest as the gateway
    finally:
        client.kill()
        client.wait()


def test_guest_tcp_to_the_gateway_reaches_a_host_loopback_server(
    start: Callable[..., PasstBackend], netns: NetNs
) -> None:
    server = run_in_ns(
        netns,
        """
        import socket
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 8080))
        s.listen()
        print("listening", flush=True)
        c, _ = s.accept()
        c.sendall(b"hello from the host")
        c.recv(1)
        """,
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == "listening\n"
        b = start()
        mac = passt_mac(b)
        isn = 1000

        def from_server(flags: int) -> Callable[[bytes], bool]:
            def want(f: bytes) -> bool:
                seg = tcp_of(f)
                if seg is None:
                    return False
                return seg.sport == 8080 and seg.dport == 40000 and seg.flags & flags == flags

            return want

        b.send(to_gateway_tcp(mac, isn, 0, SYN))
        synack = wait_frame(b, from_server(SYN | ACK))
        p, seg = ipv4_of(synack), tcp_of(synack)
        assert p is not None and p.src == ip4(GATEWAY) and p.dst == ip4(GUEST_IP)
        assert seg is not None and seg.ack == isn + 1
        b.send(to_gateway_tcp(mac, isn + 1, seg.seq + 1, ACK))

        def with_data(f: bytes) -> bool:
            seg = tcp_of(f)
            return from_server(0)(f) and seg is not None and bool(seg.payload)

        data = tcp_of(wait_frame(b, with_data))
        assert data is not None and data.payload == b"hello from the host"
    finally:
        server.kill()
        server.wait()


def test_passt_killed_under_the_backend(
    start: Callable[..., PasstBackend], caplog: pytest.LogCaptureFixture
) -> None:
    b = start()
    os.kill(b.pid, signal.SIGKILL)
    caplog.set_level(logging.INFO, logger="kvmlite.backends.net")
    assert select.select([b.fileno()], [], [], 5)[0], "the backend did not notice"
    b.service()
    assert b.recv_frames() == []
    assert b.closed
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    msg = errors[0].getMessage()
    assert errors[0].levelno == logging.ERROR
    assert "passt stopped (killed by SIGKILL" in msg and "last message" in msg
    assert b.proc.returncode == -signal.SIGKILL  # reaped, no zombie left
    b.send(arp_for(GATEWAY))  # a guest that keeps sending is no error
    assert b.tx_dropped == 1
    b.close()
    b.close()


def test_close_stops_passt_and_is_idempotent(start: Callable[..., PasstBackend]) -> None:
    b = start("tcp::2222-:22")
    pid = b.pid
    b.close()
    assert b.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    b.close()
    assert b.closed


def test_passt_exits_when_kvmlite_dies(netns: NetNs) -> None:
    # A kvmlite that starts passt and is then SIGKILLed: passt must not outlive it.
    vmm = run_in_ns(
        netns,
        f"""
        import time
        from kvmlite.backends.net.passt import PasstBackend
        b = PasstBackend.start(extra_args=("-D", "{DNS}"))
        print(b.pid, flush=True)
        time.sleep(60)
        """,
    )
    try:
        assert vmm.stdout is not None
        pid = int(vmm.stdout.readline())
        os.kill(vmm.pid, signal.SIGKILL)
        vmm.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        assert not _alive(pid), "passt outlived the kvmlite that started it"
    finally:
        vmm.kill()
        vmm.wait()


def _alive(pid: int) -> bool:
    # passt was reparented; a zombie nobody reaps yet is dead for this purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_hostfwd_port_in_use_is_a_clear_error(netns: NetNs) -> None:
    holder = run_in_ns(
        netns,
        """
        import socket, time
        s = socket.socket()
        s.bind(("0.0.0.0", 2222))
        s.listen()
        print("bound", flush=True)
        time.sleep(30)
        """,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "bound\n"
        with pytest.raises(ConfigError) as e:
            PasstBackend.start([parse_hostfwd("tcp::2222-:22")], command_prefix=in_ns(netns))
        assert "passt failed to start (exit status 1)" in str(e.value)
        assert "Failed to bind any port for '-t 2222:22'" in str(e.value)
        assert "already in use" in str(e.value)
    finally:
        holder.kill()
        holder.wait()


def test_no_default_route_is_a_clear_error_and_i_g_fix_it(netns: NetNs) -> None:
    netns.ip("route", "del", "default")
    with pytest.raises(ConfigError) as e:
        PasstBackend.start(command_prefix=in_ns(netns))
    assert "External interface not usable" in str(e.value)
    assert "-i IFACE -g GATEWAY" in str(e.value)
    b = PasstBackend.start(command_prefix=in_ns(netns), extra_args=("-i", "v0", "-g", GATEWAY))
    try:
        b.send(arp_for(GATEWAY))
        wait_frame(b, lambda f: f[12:14] == b"\x08\x06")
    finally:
        b.close()


def test_passt_runs_as_nobody_when_started_as_root(start: Callable[..., PasstBackend]) -> None:
    b = start("tcp::2222-:22")
    with open(f"/proc/{b.pid}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    assert os.geteuid() == 0  # the netns fixture skipped otherwise
    assert set(uids) == {str(65534)}  # nobody; the forwarded port was bound before that


def test_a_virtio_net_guest_gets_its_dhcp_offer_and_survives_passt_dying(
    start: Callable[..., PasstBackend], caplog: pytest.LogCaptureFixture
) -> None:
    # The whole path a guest uses: virtio-net TX ring -> passt -> RX ring, run
    # the way docs/networking.md tells the VMM to run it.
    b = start()
    dev = VirtioNet(b, mac=GUEST_MAC, queue_size=64)
    dev.rx_ready_handler = lambda pair: b.set_reading(True)
    (rx, tx, _ctrl), _, _ = attach_drivers(dev, bytearray_memory(2 << 20))

    def loop(timeout: float) -> list[bytes]:
        got: list[bytes] = []
        while not b.closed and select.select([b.fileno()], [], [], timeout)[0]:
            b.service()
            if not dev.handle_rx(0):
                b.set_reading(False)
            got += [u.written[VNET_HDR_LEN : u.length] for u in rx.get_used()]
        return got

    for _ in range(8):
        rx.add_chain([], [2048])
    tx.add_chain([bytes(VNET_HDR_LEN), dhcp_discover(GUEST_MAC, 77)])
    tx.kick()
    assert len(tx.get_used()) == 1
    frames = loop(1.0)
    offers = [f for f in frames if (p := ipv4_of(f)) is not None and p.proto == IPPROTO_UDP]
    assert len(offers) == 1
    bootp, opts = offer_options(offers[0])
    assert opts[53] == b"\x02" and bootp[16:20] == ip4(GUEST_IP)

    os.kill(b.pid, signal.SIGKILL)
    caplog.set_level(logging.ERROR, logger="kvmlite.backends.net")
    assert loop(5.0) == [] and b.closed  # the loop ends on its own: no exception
    assert "passt stopped (killed by SIGKILL" in caplog.text
    tx.add_chain([bytes(VNET_HDR_LEN), arp_for(GATEWAY)])
    tx.kick()  # the device still completes the guest's transmits (dropped, counted)
    assert len(tx.get_used()) == 1 and b.tx_dropped == 1

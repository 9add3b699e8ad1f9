"""The tap backend against the kernel itself, inside a network namespace per test.

The judge is Linux: ``ping`` must get answers the backend wrote, TCP must
hand large GSO frames once TUNSETOFFLOAD allows them, and the tap's own
counters must see what was written.
"""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import time

import pytest
from test_tap_netns import (
    HOST_IP,
    PEER_IP,
    PEER_MAC,
    netns_no_ipv6,
    peer,
)

from kvmlite.backends.net.tap import READ_FRAMES, TapBackend
from kvmlite.devices.virtio.net import VirtioNet
from kvmlite.devices.virtio.net_spec import (
    VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VNET_HDR_LEN,
)
from kvmlite.testing import attach_drivers, bytearray_memory
from kvmlite.testing.frames import ACK, PSH, SYN, Responder, checksum, ipv4, pseudo_header, tcp
from kvmlite.testing.netns import NetNs

HDR = struct.Struct("<BBHHHHH")  # virtio_net_hdr_v1
_ns = pytest.fixture(netns_no_ipv6, name="netns")


def open_up(ns: NetNs, ifname: str, **kw: object) -> list[TapBackend]:
    backends = ns.run(TapBackend.open, ifname, **kw)
    ns.address(ifname, "10.0.0.1/24")
    return backends


def serve(b: TapBackend, r: Responder, until: subprocess.Popen[str], timeout: float = 5.0) -> None:
    """Answer frames on ``b`` until the process ends."""
    deadline = time.monotonic() + timeout
    while until.poll() is None and time.monotonic() < deadline:
        if select.select([b.fileno()], [], [], 0.05)[0]:
            b.service()
            for f in b.recv_frames():
                out = r.answer(f)
                if out is not None:
                    b.send(out)


def ping(ns: NetNs, b: TapBackend, r: Responder) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        ns.argv(["ping", "-c1", "-W3", "10.0.0.2"]), stdout=subprocess.PIPE, text=True
    )
    serve(b, r, p)
    p.wait(5)
    return p


def test_kernel_pings_a_peer_behind_the_tap(netns: NetNs) -> None:
    [b] = open_up(netns, "kvlt0", vnet_hdr=False)
    try:
        assert not b.vnet_hdr and b.ifname == "kvlt0"
        r = peer()
        p = ping(netns, b, r)
        out = p.stdout.read() if p.stdout else ""
        assert p.returncode == 0 and "1 received" in out, out
        assert r.answered == ["arp", "ping"] and b.tx_frames == 2 and b.tx_dropped == 0
    finally:
        b.close()


def test_ping_with_vnet_header_and_a_kernel_chosen_name(netns: NetNs) -> None:
    [b] = netns.run(TapBackend.open)
    try:
        assert b.vnet_hdr and b.ifname.startswith("tap")
        netns.address(b.ifname, "10.0.0.1/24")
        r = peer(VNET_HDR_LEN)
        assert ping(netns, b, r).returncode == 0
        assert r.answered == ["arp", "ping"]
    finally:
        b.close()
    assert netns.sh("ip", "link", "show", b.ifname, check=False).returncode != 0  # gone


def tcp_frames(ns: NetNs, features: int) -> list[tuple[tuple[int, ...], bytes]]:
    """Frames (header fields, frame) of a TCP sender in ``ns`` pushing 64 KiB to the peer."""
    [b] = open_up(ns, "kvltso0")
    sock = ns.run(socket.socket)
    try:
        b.set_offloads(features)
        r = peer(VNET_HDR_LEN)
        sock.setblocking(False)
        sock.connect_ex(("10.0.0.2", 5001))
        sent = False
        out = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            rd, wr, _ = select.select([b.fileno()], [] if sent else [sock], [], 0.05)
            if wr and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                sock.send(bytes(65536))
                sent = True
            if rd:
                for f in b.recv_frames():
                    reply = r.answer(f)
                    if reply is not None:
                        b.send(reply)
                    body = f[VNET_HDR_LEN:]
                    if body[12:14] == b"\x08\x00" and body[23] == 6 and len(body) > 80:
                        out.append((HDR.unpack_from(f), body))
        assert sent, r.answered
        return out
    finally:
        sock.close()
        b.close()


def test_tso_offload_hands_large_gso_frames(netns: NetNs) -> None:
    feats = 1 << VIRTIO_NET_F_GUEST_CSUM | 1 << VIRTIO_NET_F_GUEST_TSO4
    frames = tcp_frames(netns, feats)
    big = [(h, f) for h, f in frames if len(f) > 1514]
    assert big, [len(f) for _, f in frames]
    for (flags, gso_type, _, gso_size, csum_start, csum_off, _nb), f in big:
        assert gso_type == VIRTIO_NET_HDR_GSO_TCPV4
        assert 500 < gso_size <= 1460 and gso_size < len(f)
        assert flags & VIRTIO_NET_HDR_F_NEEDS_CSUM
        assert (csum_start, csum_off) == (34, 16)  # TCP checksum field after eth + IPv4


def test_without_offloads_frames_are_mtu_sized_and_checksummed(netns: NetNs) -> None:
    frames = tcp_frames(netns, 0)
    assert len(frames) >= 3
    for (flags, gso_type, *_), f in frames:
        assert len(f) <= 1514 and gso_type == VIRTIO_NET_HDR_GSO_NONE and flags == 0
        ip_len = struct.unpack("!H", f[16:18])[0]
        seg = f[34 : 14 + ip_len]
        pseudo = pseudo_header(f[26:30], f[30:34], 6, len(seg))
        assert checksum(pseudo + seg) == 0  # the kernel finished the checksum


def send_udp(ns: NetNs, count: int, ports: bool = False) -> None:
    """``count`` datagrams from ``ns`` to the peer (distinct source ports if ``ports``)."""

    def body() -> None:
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
        one = socks[:1] * count
        for i, s in enumerate(socks if ports else one):
            s.sendto(b"datagram %d" % i, ("10.0.0.2", 9))
        for s in socks:
            s.close()

    ns.run(body)


def static_peer(ns: NetNs, ifname: str) -> None:
    mac = ":".join(f"{x:02x}" for x in PEER_MAC)
    ns.sh("ip", "neigh", "add", "10.0.0.2", "lladdr", mac, "dev", ifname)


def readable(b: TapBackend, timeout: float = 0.3) -> bool:
    return bool(select.select([b.fileno()], [], [], timeout)[0])


def test_multiqueue_tap_has_one_working_fd_per_queue(netns: NetNs) -> None:
    backends = open_up(netns, "kvlmq0", queues=2)
    try:
        a, b = backends
        assert a.tap_fd != b.tap_fd and a.fileno() != b.fileno()
        assert "multi_queue" in netns.sh("ip", "-d", "link", "show", "kvlmq0").stdout
        static_peer(netns, "kvlmq0")
        send_udp(netns, 64, ports=True)
        time.sleep(0.2)
        got = [
            [f for f in x.recv_frames() if f[VNET_HDR_LEN + 30 :][:4] == PEER_IP] for x in backends
        ]
        assert sum(map(len, got)) == 64
        assert got[0] and got[1], "the kernel spreads flows over both queues"
        before = netns.stat("kvlmq0", "rx_packets")
        frame = bytes(VNET_HDR_LEN) + b"\xff" * 6 + PEER_MAC + b"\x88\xb5" + bytes(50)
        a.send(frame)
        b.send(frame)
        assert netns.stat("kvlmq0", "rx_packets") == before + 2
    finally:
        for x in backends:
            x.close()


def test_reading_off_leaves_frames_in_the_kernel(netns: NetNs) -> None:
    [b] = open_up(netns, "kvlbp0")
    try:
        static_peer(netns, "kvlbp0")
        b.set_reading(False)
        send_udp(netns, 100)
        assert not readable(b)
        assert netns.stat("kvlbp0", "tx_packets") == 0  # counted when read: none read yet
        b.set_reading(True)
        assert readable(b)
        first = b.recv_frames()
        assert len(first) == READ_FRAMES  # one call never reads more than its budget
        rest = b.recv_frames()
        udp = [f for f in first + rest if f[VNET_HDR_LEN + 30 :][:4] == PEER_IP]
        assert [f[-len(b"datagram 0") :] for f in udp[:1]] == [b"datagram 0"]
        assert len(udp) == 100 and b.recv_frames() == []
        assert netns.stat("kvlbp0", "tx_packets") >= 100
        assert not readable(b, 0.05)
    finally:
        b.close()


def test_frame_the_kernel_refuses_is_counted_not_raised(
    netns: NetNs, caplog: pytest.LogCaptureFixture
) -> None:
    [b] = open_up(netns, "kvlbad0")
    try:
        eth = b"\xff" * 6 + PEER_MAC + b"\x88\xb5" + bytes(50)
        bad = HDR.pack(0, 0, 60000, 0, 0, 0, 0) + eth  # hdr_len beyond the frame: EINVAL
        before = netns.stat("kvlbad0", "rx_packets")
        b.send(bad)
        b.send(bad)
        b.send(bytes(VNET_HDR_LEN) + eth)
        assert b.tx_dropped == 2 and b.tx_frames == 1 and b.can_send() and not b.wants_write()
        assert netns.stat("kvlbad0", "rx_packets") == before + 1
        assert len([r for r in caplog.records if "dropped by the kernel" in r.message]) == 1
    finally:
        b.close()


def test_virtio_net_device_over_a_tap_answers_ping(netns: NetNs) -> None:
    """The kernel pings a MockDriver guest whose NIC is VirtioNet on a tap."""
    [b] = open_up(netns, "kvlvn0")
    dev = VirtioNet(b, mac=PEER_MAC, queue_size=64)
    dev.rx_ready_handler = lambda pair: b.set_reading(True)
    drivers, _, _ = attach_drivers(dev, bytearray_memory(2 << 20))
    rx, tx = drivers[0], drivers[1]
    guest = peer(VNET_HDR_LEN)
    try:
        rx_before = netns.stat("kvlvn0", "rx_packets")
        for _ in range(16):
            rx.add_chain([], [2048])
        rx.kick()
        p = subprocess.Popen(netns.argv(["ping", "-c1", "-W3", "10.0.0.2"]), text=True)
        deadline = time.monotonic() + 5
        while p.poll() is None and time.monotonic() < deadline:
            if readable(b, 0.05):
                b.service()
                if not dev.handle_rx(0):
                    b.set_reading(False)
            for u in rx.get_used():
                reply = guest.answer(u.written[: u.length])
                rx.add_chain([], [2048])
                rx.kick()
                if reply is not None:
                    tx.add_chain([reply])
                    tx.kick()
                    assert len(tx.get_used()) == 1
        assert p.wait(5) == 0
        assert guest.answered == ["arp", "ping"]
        assert netns.stat("kvlvn0", "rx_packets") == rx_before + 2  # the guest's two replies
        assert b.rx_frames >= 2 and b.tx_frames == 2
    finally:
        b.close()


def test_kernel_named_multiqueue_tap(netns: NetNs) -> None:
    backends = netns.run(TapBackend.open, None, queues=3)
    try:
        names = {b.ifname for b in backends}
        assert len(names) == 1 and names.pop().startswith("tap")
        assert [b.queue for b in backends] == [0, 1, 2]
        assert "multi_queue" in netns.sh("ip", "-d", "link", "show", backends[0].ifname).stdout
    finally:
        for b in backends:
            b.close()


def test_interface_deleted_under_a_running_backend(
    netns: NetNs, caplog: pytest.LogCaptureFixture
) -> None:
    [b] = open_up(netns, "kvldel0")
    try:
        netns.sh("ip", "link", "del", "kvldel0")
        assert readable(b)  # the loop wakes up once ...
        assert b.recv_frames() == [] and b.closed  # ... learns the tap is gone ...
        assert not readable(b, 0.05)  # ... and is not woken again
        b.send(bytes(VNET_HDR_LEN + 60))
        assert b.tx_dropped == 1
        assert sum("the tap is gone" in r.message for r in caplog.records) == 1
    finally:
        b.close()


def test_guest_tso_frame_reaches_a_host_socket(netns: NetNs) -> None:
    """A 20 000-byte TCP frame with a GSO virtio-net header (HOST_TSO4) is taken by the kernel."""
    [b] = open_up(netns, "kvlgso0")
    static_peer(netns, "kvlgso0")
    tap_mac = bytes.fromhex(
        netns.sh("cat", "/sys/class/net/kvlgso0/address").stdout.strip().replace(":", "")
    )
    listener = netns.run(socket.create_server, ("10.0.0.1", 5002))
    conn = None
    try:
        eth = tap_mac + PEER_MAC + b"\x08\x00"

        def to_host(seg: bytes, hdr: bytes = bytes(VNET_HDR_LEN)) -> None:
            b.send(hdr + eth + ipv4(PEER_IP, HOST_IP, 6, seg))
            assert b.tx_dropped == 0

        to_host(tcp(PEER_IP, HOST_IP, 40000, 5002, 100, 0, SYN, mss=1460))
        synack = None
        deadline = time.monotonic() + 3
        while synack is None and time.monotonic() < deadline:
            if readable(b, 0.05):
                for f in b.recv_frames():
                    body = f[VNET_HDR_LEN:]
                    if body[23:24] == b"\x06" and body[47] == 0x12:  # SYN|ACK
                        synack = struct.unpack("!I", body[38:42])[0]
        assert synack is not None
        to_host(tcp(PEER_IP, HOST_IP, 40000, 5002, 101, synack + 1, ACK))
        listener.settimeout(3)
        conn, _ = listener.accept()
        data = bytes(range(256)) * 78 + bytes(32)  # 20 000 bytes: 14 segments of 1448
        seg = tcp(PEER_IP, HOST_IP, 40000, 5002, 101, synack + 1, PSH | ACK, data)
        pseudo_sum = ~checksum(pseudo_header(PEER_IP, HOST_IP, 6, len(seg))) & 0xFFFF
        seg = seg[:16] + struct.pack("!H", pseudo_sum) + seg[18:]  # partial, as a guest sends it
        gso = HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16, 0)
        to_host(seg, gso)
        got = b""
        conn.settimeout(3)
        while len(got) < len(data):
            chunk = conn.recv(65536)
            assert chunk
            got += chunk
        assert got == data
        assert b.tx_frames == 3
    finally:
        if conn is not None:
            conn.close()
        listener.close()
        b.close()

"""Hand-made Ethernet frames for networking tests: small builders and parsers.

A test that plays a host on a network (the peer behind a tap, a guest talking
to passt, the far end of a socket netdev) builds its frames here and reads
the ones it gets back here, so the kernel's or QEMU's own stack is the judge.
Addresses are 4-byte ``bytes`` or dotted-quad ``str``; MACs are 6 bytes.

Formats followed: Ethernet II (IEEE 802.3 type field), ARP (RFC 826), IPv4
(RFC 791, options never built), ICMP echo (RFC 792), UDP (RFC 768), TCP
(RFC 793, the MSS option of section 3.1), BOOTP/DHCP (RFC 951, RFC 2131,
options RFC 2132), and the Internet checksum (RFC 1071).

Parsers take bytes from the other side and return ``None`` for anything too
short or of another kind; they never raise on malformed input.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
BROADCAST = b"\xff" * 6
ETH_HLEN = 14

# TCP flags (RFC 793 section 3.1, the low six bits of byte 13)
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ARP_REQUEST, ARP_REPLY = 1, 2
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
DHCP_MAGIC = b"\x63\x82\x53\x63"  # RFC 2131 section 3: the options field's first four bytes

Address = bytes | str


def ip4(addr: Address) -> bytes:
    """``addr`` as 4 bytes (a dotted quad is converted, bytes are checked)."""
    if isinstance(addr, str):
        return socket.inet_aton(addr)
    if len(addr) != 4:
        raise ValueError(f"an IPv4 address is 4 bytes, not {len(addr)}")
    return bytes(addr)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): the one's complement of the one's complement
    sum of ``data``'s 16-bit big-endian words, an odd length padded with a zero byte.
    Over data that already holds a correct checksum it is 0."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pseudo_header(src: Address, dst: Address, proto: int, length: int) -> bytes:
    """The IPv4 pseudo-header that TCP (RFC 793 3.1) and UDP (RFC 768) checksums cover."""
    return ip4(src) + ip4(dst) + struct.pack("!BBH", 0, proto, length)


# -- building ------------------------------------------------------------------------------------


def eth(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    """An Ethernet II frame (no FCS: taps and virtio-net carry none)."""
    return dst + src + struct.pack("!H", ethertype) + payload


def ipv4(
    src: Address,
    dst: Address,
    proto: int,
    payload: bytes,
    *,
    ttl: int = 64,
    ident: int = 0,
    dont_fragment: bool = False,
) -> bytes:
    """An IPv4 packet (RFC 791) with a 20-byte header and its header checksum."""
    frag = 0x4000 if dont_fragment else 0
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, ttl, proto, 0, ip4(src), ip4(dst)
    )
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def udp(
    sport: int,
    dport: int,
    payload: bytes,
    *,
    src: Address | None = None,
    dst: Address | None = None,
) -> bytes:
    """A UDP datagram (RFC 768); with ``src`` and ``dst`` it carries a checksum, else 0
    ("no checksum", allowed over IPv4)."""
    dgram = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if src is None or dst is None:
        return dgram
    # A computed 0 is sent as all ones: 0 means "none" (RFC 768).
    csum = checksum(pseudo_header(src, dst, IPPROTO_UDP, len(dgram)) + dgram) or 0xFFFF
    return dgram[:6] + struct.pack("!H", csum) + dgram[8:]


def tcp(
    src: Address,
    dst: Address,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    *,
    window: int = 65535,
    mss: int | None = None,
) -> bytes:
    """A TCP segment (RFC 793) with its checksum; ``mss`` adds the MSS option (kind 2)."""
    opts = struct.pack("!BBH", 2, 4, mss) if mss is not None else b""
    off = (20 + len(opts)) // 4
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, window, 0, 0)
    seg = hdr + opts + payload
    csum = checksum(pseudo_header(src, dst, IPPROTO_TCP, len(seg)) + seg)
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def icmp_echo(ident: int, seq: int, data: bytes = b"", *, reply: bool = False) -> bytes:
    """An ICMP echo request (or reply) message (RFC 792) with its checksum."""
    kind = ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST
    msg = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + data
    return msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]


def arp(op: int, sha: bytes, spa: Address, tha: bytes, tpa: Address) -> bytes:
    """An ARP packet for IPv4 over Ethernet (RFC 826): hardware type 1, protocol 0x0800."""
    return struct.pack(
        "!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, op, sha, ip4(spa), tha, ip4(tpa)
    )  # fmt: skip


def arp_request(mac: bytes, ip: Address, target: Address) -> bytes:
    """A broadcast frame from ``mac``/``ip`` asking who has ``target``."""
    return eth(BROADCAST, mac, ETH_P_ARP, arp(ARP_REQUEST, mac, ip, bytes(6), target))


def dhcp_discover(mac: bytes, xid: int) -> bytes:
    """A broadcast DHCPDISCOVER frame (RFC 2131 4.4.1) from ``mac``, asking for subnet
    mask, router and DNS servers (RFC 2132 option 55), padded to BOOTP's 300 bytes."""
    bootp = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, 6, 0, xid, 0, 0x8000,  # BOOTREQUEST, Ethernet, the broadcast flag
        bytes(4), bytes(4), bytes(4), bytes(4), mac, b"", b"",
    )  # fmt: skip
    options = bytes([53, 1, 1, 55, 3, 1, 3, 6, 255])  # DHCPDISCOVER; mask, router, DNS; end
    msg = (bootp + DHCP_MAGIC + options).ljust(300, b"\0")
    packet = ipv4("0.0.0.0", "255.255.255.255", IPPROTO_UDP, udp(68, 67, msg),
                  ident=1, dont_fragment=True)  # fmt: skip
    return eth(BROADCAST, mac, ETH_P_IP, packet)


# -- parsing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Eth:
    dst: bytes
    src: bytes
    ethertype: int
    payload: bytes


@dataclass(frozen=True)
class Arp:
    op: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes


@dataclass(frozen=True)
class Ipv4:
    src: bytes
    dst: bytes
    proto: int
    ttl: int
    payload: bytes  # as long as the header's total length says, without padding


@dataclass(frozen=True)
class Tcp:
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes


def parse_eth(frame: bytes) -> Eth | None:
    if len(frame) < ETH_HLEN:
        return None
    return Eth(frame[:6], frame[6:12], struct.unpack_from("!H", frame, 12)[0], frame[ETH_HLEN:])


def parse_arp(packet: bytes) -> Arp | None:
    """An IPv4-over-Ethernet ARP packet (RFC 826), or None."""
    if len(packet) < 28:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack_from("!HHBBH6s4s6s4s", packet)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4):
        return None
    return Arp(op, sha, spa, tha, tpa)


def parse_ipv4(packet: bytes) -> Ipv4 | None:
    """An IPv4 packet (RFC 791) whose header and total length fit in ``packet``, or None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 15) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    if ihl < 20 or total < ihl or total > len(packet):
        return None
    return Ipv4(packet[12:16], packet[16:20], packet[9], packet[8], packet[ihl:total])


def ipv4_of(frame: bytes) -> Ipv4 | None:
    """The IPv4 packet an Ethernet frame carries, or None."""
    e = parse_eth(frame)
    return parse_ipv4(e.payload) if e is not None and e.ethertype == ETH_P_IP else None


def parse_tcp(segment: bytes) -> Tcp | None:
    """A TCP segment (RFC 793) whose header fits, or None."""
    if len(segment) < 20:
        return None
    sport, dport, seq, ack, off, flags, window = struct.unpack_from("!HHIIBBH", segment)
    if off >> 4 < 5 or (off >> 4) * 4 > len(segment):
        return None
    return Tcp(sport, dport, seq, ack, flags & 0x3F, window, segment[(off >> 4) * 4 :])


def dhcp_options(bootp: bytes) -> dict[int, bytes] | None:
    """The options of a BOOTP/DHCP message (RFC 2131 section 3, RFC 2132 encoding) up to
    the end option, or None without the magic cookie or with an option cut short."""
    if bootp[236:240] != DHCP_MAGIC:
        return None
    opts: dict[int, bytes] = {}
    pos = 240
    while pos < len(bootp) and bootp[pos] != 255:
        if bootp[pos] == 0:  # pad
            pos += 1
            continue
        if pos + 2 > len(bootp) or pos + 2 + bootp[pos + 1] > len(bootp):
            return None
        code, n = bootp[pos], bootp[pos + 1]
        opts[code] = bootp[pos + 2 : pos + 2 + n]
        pos += 2 + n
    return opts


# -- a tiny host ---------------------------------------------------------------------------------


@dataclass
class Responder:
    """A host at ``ip``/``mac`` that answers the frames it is handed: ARP requests for
    ``ip``, ICMP echo requests (RFC 792) and bare TCP SYNs (with a SYN-ACK, MSS 1460) sent
    to it.  ``hdr_len`` bytes (a virtio-net header) stand before every frame, both ways;
    a reply's header is zeros.  ``answered`` names each answer given: arp, ping, syn."""

    mac: bytes
    ip: bytes
    hdr_len: int = 0
    answered: list[str] = field(default_factory=list)

    def answer(self, frame: bytes) -> bytes | None:
        """The reply frame, or None when ``frame`` asks nothing of this host."""
        e = parse_eth(frame[self.hdr_len :])
        if e is None:
            return None
        if e.ethertype == ETH_P_ARP:
            a = parse_arp(e.payload)
            if a is None or a.op != ARP_REQUEST or a.tpa != self.ip:
                return None
            self.answered.append("arp")
            return self._reply(e.src, ETH_P_ARP, arp(ARP_REPLY, self.mac, self.ip, a.sha, a.spa))
        p = parse_ipv4(e.payload) if e.ethertype == ETH_P_IP and e.dst == self.mac else None
        if p is None or p.dst != self.ip:
            return None
        body = p.payload
        if p.proto == IPPROTO_ICMP and len(body) >= 8 and body[0] == ICMP_ECHO_REQUEST:
            ident, seq = struct.unpack_from("!HH", body, 4)
            self.answered.append("ping")
            reply = icmp_echo(ident, seq, body[8:], reply=True)
            return self._reply(e.src, ETH_P_IP, ipv4(self.ip, p.src, IPPROTO_ICMP, reply))
        t = parse_tcp(body) if p.proto == IPPROTO_TCP else None
        if t is not None and t.flags == SYN:
            seg = tcp(self.ip, p.src, t.dport, t.sport, 1000, t.seq + 1, SYN | ACK, mss=1460)
            self.answered.append("syn")
            return self._reply(e.src, ETH_P_IP, ipv4(self.ip, p.src, IPPROTO_TCP, seg))
        return None

    def _reply(self, dst: bytes, ethertype: int, payload: bytes) -> bytes:
        return bytes(self.hdr_len) + eth(dst, self.mac, ethertype, payload)

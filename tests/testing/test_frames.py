"""kvmlite.testing.frames: known answers from the RFCs and elsewhere, round trips, and
parsers that never raise on bytes from the other side."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.testing.frames import (
    ACK,
    ARP_REPLY,
    BROADCAST,
    ETH_P_ARP,
    ETH_P_IP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SYN,
    Responder,
    arp_request,
    checksum,
    dhcp_discover,
    dhcp_options,
    eth,
    icmp_echo,
    ip4,
    ipv4,
    ipv4_of,
    parse_arp,
    parse_eth,
    parse_ipv4,
    parse_tcp,
    pseudo_header,
    tcp,
    udp,
)

MAC = bytes.fromhex("525400123456")
PEER_MAC = bytes.fromhex("525400abcdef")


def test_checksum_rfc1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement).
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF


def test_checksum_pads_an_odd_length_with_zero() -> None:
    assert checksum(b"\x12\x34\x56") == checksum(b"\x12\x34\x56\x00") == ~0x6834 & 0xFFFF
    assert checksum(b"") == 0xFFFF


def test_ipv4_header_matches_a_known_packet() -> None:
    # A well-known UDP packet's header, 192.168.0.1 -> 192.168.0.199, checksum b861.
    known = bytes.fromhex("450000730000400040 11b861c0a80001c0a800c7".replace(" ", ""))
    packet = ipv4("192.168.0.1", "192.168.0.199", IPPROTO_UDP, bytes(0x73 - 20),
                  dont_fragment=True)  # fmt: skip
    assert packet[:20] == known
    assert checksum(packet[:20]) == 0


def test_icmp_echo_known_message() -> None:
    # type 8, id 1, seq 1, no data: 0800 0000 0001 0001 sums to 0802 -> checksum f7fd.
    assert icmp_echo(1, 1) == bytes.fromhex("0800f7fd00010001")
    assert icmp_echo(1, 1, reply=True) == bytes.fromhex("0000fffd00010001")


def test_tcp_and_udp_checksums_cover_the_pseudo_header() -> None:
    seg = tcp("10.0.0.2", "10.0.0.1", 40000, 22, 7, 0, SYN, b"abc", mss=1460)
    assert checksum(pseudo_header("10.0.0.2", "10.0.0.1", IPPROTO_TCP, len(seg)) + seg) == 0
    assert seg[12] >> 4 == 6 and seg[20:24] == bytes.fromhex("020405b4")  # MSS 1460
    # The same segment between other addresses has another checksum.
    assert tcp("10.0.0.3", "10.0.0.1", 40000, 22, 7, 0, SYN, b"abc", mss=1460) != seg
    dgram = udp(68, 67, b"hello", src="10.0.0.2", dst="10.0.0.1")
    assert checksum(pseudo_header("10.0.0.2", "10.0.0.1", IPPROTO_UDP, len(dgram)) + dgram) == 0
    assert udp(68, 67, b"hello")[6:8] == b"\0\0"  # no checksum without addresses


def test_udp_checksum_that_computes_to_zero_is_sent_as_ones() -> None:
    # Choose the last payload word so that the one's complement sum is ffff: checksum 0.
    src, dst, payload = "10.0.0.2", "10.0.0.1", b"ab\0\0"
    zero = udp(1, 2, payload)  # checksum field 0, the word to choose 0
    s = ~checksum(pseudo_header(src, dst, IPPROTO_UDP, len(zero)) + zero) & 0xFFFF
    payload = payload[:2] + struct.pack("!H", 0xFFFF - s)
    assert udp(1, 2, payload, src=src, dst=dst)[6:8] == b"\xff\xff"


def test_round_trips() -> None:
    seg = tcp("1.2.3.4", "5.6.7.8", 1, 2, 3, 4, SYN | ACK, b"data", window=100)
    frame = eth(PEER_MAC, MAC, ETH_P_IP, ipv4("1.2.3.4", "5.6.7.8", IPPROTO_TCP, seg) + bytes(6))
    e = parse_eth(frame)
    assert e is not None and (e.dst, e.src, e.ethertype) == (PEER_MAC, MAC, ETH_P_IP)
    p = ipv4_of(frame)
    assert p is not None and (p.src, p.dst, p.proto, p.ttl) == (ip4("1.2.3.4"),
                                                                ip4("5.6.7.8"), 6, 64)  # fmt: skip
    assert p.payload == seg  # the trailing padding is not part of it
    t = parse_tcp(p.payload)
    assert t is not None
    assert (t.sport, t.dport, t.seq, t.ack, t.flags, t.window, t.payload) == (
        1, 2, 3, 4, SYN | ACK, 100, b"data",
    )  # fmt: skip
    a = parse_arp(parse_eth(arp_request(MAC, "10.0.0.1", "10.0.0.2")).payload)  # type: ignore[union-attr]
    assert a is not None and (a.op, a.sha, a.spa, a.tpa) == (1, MAC, ip4("10.0.0.1"),
                                                             ip4("10.0.0.2"))  # fmt: skip


def test_dhcp_discover_is_a_bootp_request_with_its_options() -> None:
    frame = dhcp_discover(MAC, 0x1234ABCD)
    assert frame[:12] == BROADCAST + MAC
    p = ipv4_of(frame)
    assert p is not None and p.proto == IPPROTO_UDP and p.dst == b"\xff" * 4
    bootp = p.payload[8:]
    assert len(bootp) == 300 and bootp[0] == 1 and bootp[28:34] == MAC
    assert struct.unpack_from("!I", bootp, 4)[0] == 0x1234ABCD
    assert dhcp_options(bootp) == {53: b"\x01", 55: b"\x01\x03\x06"}


def test_dhcp_options_refuses_malformed_messages() -> None:
    assert dhcp_options(bytes(300)) is None  # no magic cookie
    head = bytes(236) + bytes.fromhex("63825363")
    assert dhcp_options(head + bytes([0, 0, 53, 1, 2, 255])) == {53: b"\x02"}  # pads skipped
    assert dhcp_options(head + bytes([53, 5, 1])) is None  # the option runs past the end
    assert dhcp_options(head + bytes([53])) is None  # no length byte


def test_ip4_refuses_a_wrong_length() -> None:
    with pytest.raises(ValueError):
        ip4(b"\1\2\3")


@pytest.mark.parametrize(
    "bad",
    [
        bytes(19),  # too short
        bytes([0x65]) + bytes(19),  # version 6
        bytes([0x44]) + bytes(19),  # IHL below 5
        ipv4("1.1.1.1", "2.2.2.2", 17, b"xy")[:21],  # total length past the end
    ],
)
def test_parse_ipv4_refuses(bad: bytes) -> None:
    assert parse_ipv4(bad) is None


def test_parse_tcp_refuses_an_offset_past_the_end() -> None:
    seg = bytearray(tcp("1.1.1.1", "2.2.2.2", 1, 2, 0, 0, ACK))
    seg[12] = 15 << 4
    assert parse_tcp(bytes(seg)) is None
    assert parse_tcp(bytes(19)) is None


@given(st.binary(max_size=128))
def test_parsers_never_raise(data: bytes) -> None:
    parse_eth(data)
    parse_arp(data)
    parse_ipv4(data)
    ipv4_of(data)
    parse_tcp(data)
    dhcp_options(data)
    Responder(PEER_MAC, ip4("10.0.0.2")).answer(data)


def test_responder_answers_arp_ping_and_syn_with_a_header() -> None:
    r = Responder(PEER_MAC, ip4("10.0.0.2"), hdr_len=12)
    hdr = bytes(12)
    reply = r.answer(hdr + arp_request(MAC, "10.0.0.1", "10.0.0.2"))
    assert reply is not None and reply[:12] == hdr
    e = parse_eth(reply[12:])
    assert e is not None and (e.dst, e.src, e.ethertype) == (MAC, PEER_MAC, ETH_P_ARP)
    a = parse_arp(e.payload)
    assert a is not None and (a.op, a.sha, a.spa, a.tha, a.tpa) == (
        ARP_REPLY, PEER_MAC, ip4("10.0.0.2"), MAC, ip4("10.0.0.1"),
    )  # fmt: skip

    ping = ipv4("10.0.0.1", "10.0.0.2", 1, icmp_echo(7, 3, b"payload"))
    pong = ipv4_of(r.answer(hdr + eth(PEER_MAC, MAC, ETH_P_IP, ping))[12:])  # type: ignore[index]
    assert pong is not None and pong.dst == ip4("10.0.0.1") and checksum(pong.payload) == 0
    assert pong.payload == icmp_echo(7, 3, b"payload", reply=True)

    syn = tcp("10.0.0.1", "10.0.0.2", 5000, 80, 41, 0, SYN)
    out = r.answer(hdr + eth(PEER_MAC, MAC, ETH_P_IP, ipv4("10.0.0.1", "10.0.0.2", 6, syn)))
    p = ipv4_of(out[12:])  # type: ignore[index]
    assert p is not None
    t = parse_tcp(p.payload)
    assert t is not None and (t.sport, t.dport, t.ack, t.flags) == (80, 5000, 42, SYN | ACK)
    assert r.answered == ["arp", "ping", "syn"]

    # Not for this host: another address, another MAC, a SYN with ACK.
    assert r.answer(hdr + arp_request(MAC, "10.0.0.1", "10.0.0.3")) is None
    assert r.answer(hdr + eth(MAC, MAC, ETH_P_IP, ping)) is None
    synack = tcp("10.0.0.1", "10.0.0.2", 5000, 80, 41, 0, SYN | ACK)
    ip = ipv4("10.0.0.1", "10.0.0.2", 6, synack)
    assert r.answer(hdr + eth(PEER_MAC, MAC, ETH_P_IP, ip)) is None
    assert r.answered == ["arp", "ping", "syn"]

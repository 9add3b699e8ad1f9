"""vhost-user message parsing: sizes, fds, malformed input, fuzzing."""

from __future__ import annotations

import ctypes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.errors import KvmliteError
from kvmlite.vhost_user import protocol as p
from kvmlite.vhost_user.protocol import ProtocolError, Request


def test_struct_sizes() -> None:
    assert p.HEADER_SIZE == 12
    assert ctypes.sizeof(p.VhostVringState) == 8
    assert ctypes.sizeof(p.VhostVringAddr) == 40
    assert p.VhostVringAddr.used.offset == 16 and p.VhostVringAddr.available.offset == 24
    assert ctypes.sizeof(p.VhostMemoryRegion) == 32
    assert p.VhostMemoryRegion.mmap_offset.offset == 24
    assert ctypes.sizeof(p.VhostConfigHeader) == 12
    assert issubclass(ProtocolError, KvmliteError)


def test_header_round_trip_and_flags() -> None:
    msg = p.encode(Request.GET_FEATURES, need_reply=True)
    assert msg == bytes.fromhex("010000000900000000000000")
    h = p.parse_header(msg)
    assert (h.request, h.size, h.need_reply) == (1, 0, True)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x01\x00\x00\x00\x01\x00\x00", "header is 7 bytes"),
        (bytes(p.VhostUserHeader(1, 2, 0)), "version 2"),
        (bytes(p.VhostUserHeader(1, 0, 0)), "version 0"),
        (bytes(p.VhostUserHeader(1, 1 | p.VHOST_USER_REPLY_MASK, 0)), "reply sent"),
        (bytes(p.VhostUserHeader(1, 1, 1 << 20)), "exceeds"),
    ],
)
def test_bad_headers(raw: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        p.parse_header(raw)


def test_payloads_decode() -> None:
    assert p.parse_payload(Request.SET_FEATURES, p.u64(1 << 32 | 5)) == 1 << 32 | 5
    assert p.parse_payload(Request.GET_FEATURES, b"") is None
    assert p.parse_payload(Request.SET_VRING_NUM, p.vring_state(1, 256)) == p.VringState(1, 256)
    addr = p.parse_payload(Request.SET_VRING_ADDR, p.vring_addr(0, 0x1000, 0x3000, 0x2000))
    assert addr == p.VringAddr(0, 0, 0x1000, 0x3000, 0x2000, 0)
    assert p.parse_payload(Request.SET_VRING_KICK, p.u64(3), 1) == p.VringFd(3, False)
    assert p.parse_payload(Request.SET_VRING_CALL, p.u64(0x102), 0) == p.VringFd(2, True)
    regions = [
        p.MemoryRegion(0, 1 << 20, 0x7F0000000000, 0),
        p.MemoryRegion(1 << 32, 4096, 0, 8192),
    ]
    table = p.parse_payload(Request.SET_MEM_TABLE, p.mem_table(regions), 2)
    assert table == p.MemoryTable(tuple(regions))
    cfg = p.parse_payload(Request.SET_CONFIG, p.config_space(4, b"abcd"))
    assert cfg == p.ConfigSpace(4, 4, 0, b"abcd")
    assert p.parse_payload(Request.GET_CONFIG, p.config_space(0, bytes(60))).size == 60


def test_qemu_style_full_mem_table() -> None:
    one = p.mem_table([p.MemoryRegion(0, 4096, 0x1000, 0)])
    padded = one + bytes(7 * p.MEM_REGION_SIZE)
    table = p.parse_payload(Request.SET_MEM_TABLE, padded, 1)
    assert isinstance(table, p.MemoryTable) and len(table.regions) == 1


@pytest.mark.parametrize(
    ("request_", "payload", "nfds", "match"),
    [
        (999, b"", 0, "unknown request 999"),
        (Request.SET_LOG_FD, b"", 1, "not supported"),
        (Request.SET_FEATURES, b"\x00" * 4, 0, "payload is 4 bytes, expected 8"),
        (Request.SET_FEATURES, p.u64(0), 1, "1 fds, expected 0"),
        (Request.GET_FEATURES, b"\x00" * 3, 0, "payload is 3 bytes, expected 0"),
        (Request.SET_VRING_NUM, b"\x00" * 12, 0, "expected 8"),
        (Request.SET_VRING_ADDR, b"\x00" * 39, 0, "expected 40"),
        (Request.SET_VRING_KICK, p.u64(0), 0, "0 fds, expected 1"),
        (Request.SET_VRING_KICK, p.u64(0x100), 1, "1 fds, expected 0"),
        (Request.SET_VRING_CALL, p.u64(1 << 9), 0, "reserved bits"),
        (Request.SET_MEM_TABLE, b"\x01\x00", 0, "expected 8"),
        (Request.SET_MEM_TABLE, p.mem_table([]), 0, "0 regions"),
        (Request.SET_MEM_TABLE, bytes(p.VhostMemoryHeader(9, 0)), 9, "9 regions"),
        (Request.SET_MEM_TABLE, p.mem_table([p.MemoryRegion(0, 4096, 0, 0)])[:-1], 1, "bytes"),
        (Request.SET_MEM_TABLE, p.mem_table([p.MemoryRegion(0, 4096, 0, 0)]), 0, "0 fds"),
        (Request.SET_MEM_TABLE, p.mem_table([p.MemoryRegion(0, 0, 0, 0)]), 1, "empty"),
        (Request.SET_MEM_TABLE, p.mem_table([p.MemoryRegion(2**64 - 8, 16, 0, 0)]), 1, "wraps"),
        (Request.GET_CONFIG, b"\x00" * 8, 0, "shorter than"),
        (Request.GET_CONFIG, p.config_space(0, b"", size=300), 0, "outside"),
        (Request.GET_CONFIG, p.config_space(250, b"", size=10), 0, "outside"),
        (Request.SET_CONFIG, p.config_space(0, b"ab", size=4), 0, "expected 16"),
    ],
)
def test_malformed_payloads(request_: int, payload: bytes, nfds: int, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        p.parse_payload(request_, payload, nfds)


@given(st.binary(max_size=p.HEADER_SIZE + 4))
def test_fuzz_header(data: bytes) -> None:
    try:
        h = p.parse_header(data)
    except ProtocolError:
        return
    assert len(data) == p.HEADER_SIZE and h.size <= p.MAX_PAYLOAD_SIZE


@given(
    st.sampled_from(sorted(p.SUPPORTED_REQUESTS) + [0, 41, 1000]),
    st.binary(max_size=320),
    st.integers(0, 9),
)
def test_fuzz_payload(request: int, payload: bytes, nfds: int) -> None:
    """Any bytes and fd count: a typed payload or ProtocolError, nothing else."""
    try:
        p.parse_payload(request, payload, nfds)
    except ProtocolError:
        pass


@given(
    st.lists(
        st.builds(
            p.MemoryRegion,
            st.integers(0, 2**48),
            st.integers(1, 2**40),
            st.integers(0, 2**48),
            st.integers(0, 2**40),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_fuzz_mem_table_round_trip(regions: list[p.MemoryRegion]) -> None:
    table = p.parse_payload(Request.SET_MEM_TABLE, p.mem_table(regions), len(regions))
    assert table == p.MemoryTable(tuple(regions))

"""vhost-user messages, sans-IO (QEMU docs/interop/vhost-user.rst).

Theory of operation
-------------------
Every message is a 12-byte header (``request``, ``flags``, ``size``; all
little-endian u32) followed by ``size`` bytes of payload ("Message
format").  File descriptors travel beside the first byte as SCM_RIGHTS
ancillary data.  This module only turns bytes (and a count of received fds)
into typed payloads and back; sockets live in ``kvmlite.vhost_user.backend``.

Parsing is strict: a payload whose size is not exactly what the request
carries, a version other than 1, an unknown request, a memory table with
more regions than it has fds or than the protocol allows, a config access
outside ``VHOST_USER_MAX_CONFIG_SIZE``: each is a ``ProtocolError`` naming
what was wrong, never a half-parsed message.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass

from kvmlite.errors import KvmliteError

# -- header ("Header" section) -------------------------------------------------------------


class VhostUserHeader(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [("request", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("size", ctypes.c_uint32)]


HEADER_SIZE = ctypes.sizeof(VhostUserHeader)  # 12
VHOST_USER_VERSION_MASK = 0x3
VHOST_USER_VERSION = 0x1
VHOST_USER_REPLY_MASK = 0x1 << 2
VHOST_USER_NEED_REPLY_MASK = 0x1 << 3
#: The largest payload we accept (a full memory table is 8 + 8 * 32 bytes).
MAX_PAYLOAD_SIZE = 4096
#: VHOST_MEMORY_BASELINE_NREGIONS: regions in one SET_MEM_TABLE.
VHOST_MEMORY_MAX_NREGIONS = 8
#: "VHOST_USER_MAX_CONFIG_SIZE" (256 bytes of device config).
VHOST_USER_MAX_CONFIG_SIZE = 256
#: SET_VRING_KICK/CALL/ERR payload: bits 0-7 queue index, bit 8 "no fd".
VHOST_USER_VRING_IDX_MASK = 0xFF
VHOST_USER_VRING_NOFD_MASK = 0x1 << 8

#: Feature bit (in GET/SET_FEATURES) saying GET/SET_PROTOCOL_FEATURES exist.
VHOST_USER_F_PROTOCOL_FEATURES = 30


class Request(enum.IntEnum):
    """Front-end message types ("Front-end message types")."""

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_BACKEND_REQ_FD = 21
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    CREATE_CRYPTO_SESSION = 26
    CLOSE_CRYPTO_SESSION = 27
    POSTCOPY_ADVISE = 28
    POSTCOPY_LISTEN = 29
    POSTCOPY_END = 30
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    GPU_SET_SOCKET = 33
    RESET_DEVICE = 34
    VRING_KICK = 35
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40


class ProtocolFeature(enum.IntEnum):
    """Protocol feature bits ("Protocol features")."""

    MQ = 0
    LOG_SHMFD = 1
    RARP = 2
    REPLY_ACK = 3
    NET_MTU = 4
    BACKEND_REQ = 5
    CROSS_ENDIAN = 6
    CRYPTO_SESSION = 7
    PAGEFAULT = 8
    CONFIG = 9
    BACKEND_SEND_FD = 10
    HOST_NOTIFIER = 11
    INFLIGHT_SHMFD = 12
    RESET_DEVICE = 13
    INBAND_NOTIFICATIONS = 14
    CONFIGURE_MEM_SLOTS = 15
    STATUS = 16


class ProtocolError(KvmliteError):
    """A message that breaks vhost-user.rst; the connection should be dropped."""


# -- payloads ("Message types" / payload structs) -------------------------------------


class VhostVringState(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [("index", ctypes.c_uint32), ("num", ctypes.c_uint32)]


class VhostVringAddr(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("descriptor", ctypes.c_uint64),
        ("used", ctypes.c_uint64),
        ("available", ctypes.c_uint64),
        ("log", ctypes.c_uint64),
    ]


class VhostMemoryRegion(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("guest_addr", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
        ("user_addr", ctypes.c_uint64),
        ("mmap_offset", ctypes.c_uint64),
    ]


class VhostMemoryHeader(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [("num_regions", ctypes.c_uint32), ("padding", ctypes.c_uint32)]


class VhostConfigHeader(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [("offset", ctypes.c_uint32), ("size", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


U64_SIZE = 8
VRING_STATE_SIZE = ctypes.sizeof(VhostVringState)  # 8
VRING_ADDR_SIZE = ctypes.sizeof(VhostVringAddr)  # 40
MEM_REGION_SIZE = ctypes.sizeof(VhostMemoryRegion)  # 32
MEM_HEADER_SIZE = ctypes.sizeof(VhostMemoryHeader)  # 8
CONFIG_HEADER_SIZE = ctypes.sizeof(VhostConfigHeader)  # 12


@dataclass(frozen=True)
class Header:
    request: int
    flags: int
    size: int

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & VHOST_USER_NEED_REPLY_MASK)


@dataclass(frozen=True)
class VringState:
    index: int
    num: int


@dataclass(frozen=True)
class VringAddr:
    index: int
    flags: int
    descriptor: int
    used: int
    available: int
    log: int


@dataclass(frozen=True)
class MemoryRegion:
    guest_addr: int
    size: int
    user_addr: int
    mmap_offset: int


@dataclass(frozen=True)
class MemoryTable:
    regions: tuple[MemoryRegion, ...]


@dataclass(frozen=True)
class VringFd:
    """SET_VRING_KICK/CALL/ERR: the queue and whether an fd came with it."""

    index: int
    no_fd: bool


@dataclass(frozen=True)
class ConfigSpace:
    offset: int
    size: int
    flags: int
    data: bytes


Payload = int | VringState | VringAddr | MemoryTable | VringFd | ConfigSpace | None

# Requests and the payload each carries from the front-end.
_U64_REQUESTS = frozenset(
    {
        Request.SET_FEATURES,
        Request.SET_PROTOCOL_FEATURES,
        Request.SET_LOG_BASE,
        Request.SET_STATUS,
    }
)
_NO_PAYLOAD = frozenset(
    {
        Request.GET_FEATURES,
        Request.SET_OWNER,
        Request.RESET_OWNER,
        Request.GET_PROTOCOL_FEATURES,
        Request.GET_QUEUE_NUM,
        Request.RESET_DEVICE,
        Request.GET_MAX_MEM_SLOTS,
        Request.GET_STATUS,
    }
)
_STATE_REQUESTS = frozenset(
    {
        Request.SET_VRING_NUM,
        Request.SET_VRING_BASE,
        Request.GET_VRING_BASE,
        Request.SET_VRING_ENABLE,
    }
)
_VRING_FD_REQUESTS = frozenset(
    {Request.SET_VRING_KICK, Request.SET_VRING_CALL, Request.SET_VRING_ERR}
)
#: Requests this module can parse; others are ProtocolError("not supported").
SUPPORTED_REQUESTS = (
    _U64_REQUESTS
    | _NO_PAYLOAD
    | _STATE_REQUESTS
    | _VRING_FD_REQUESTS
    | {
        Request.SET_VRING_ADDR,
        Request.SET_MEM_TABLE,
        Request.GET_CONFIG,
        Request.SET_CONFIG,
        Request.SET_BACKEND_REQ_FD,
    }
)


def request_name(code: int) -> str:
    try:
        return f"VHOST_USER_{Request(code).name}"
    except ValueError:
        return f"request {code}"


def parse_header(data: bytes | bytearray | memoryview) -> Header:
    """Decode a 12-byte header; checks the version, the REPLY bit and the size bound."""
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"message header is {len(data)} bytes, expected {HEADER_SIZE}")
    h = VhostUserHeader.from_buffer_copy(bytes(data))
    if h.flags & VHOST_USER_VERSION_MASK != VHOST_USER_VERSION:
        raise ProtocolError(
            f"{request_name(h.request)}: version {h.flags & VHOST_USER_VERSION_MASK}, "
            f"only version {VHOST_USER_VERSION} is supported"
        )
    if h.flags & VHOST_USER_REPLY_MASK:
        raise ProtocolError(f"{request_name(h.request)}: a reply sent to the back-end")
    if h.size > MAX_PAYLOAD_SIZE:
        raise ProtocolError(
            f"{request_name(h.request)}: payload of {h.size} bytes exceeds {MAX_PAYLOAD_SIZE}"
        )
    return Header(h.request, h.flags, h.size)


def _expect(req: Request, payload: bytes, size: int) -> None:
    if len(payload) != size:
        raise ProtocolError(
            f"VHOST_USER_{req.name}: payload is {len(payload)} bytes, expected {size}"
        )


def _expect_fds(req: Request, nfds: int, expected: int) -> None:
    if nfds != expected:
        raise ProtocolError(f"VHOST_USER_{req.name}: came with {nfds} fds, expected {expected}")


def parse_payload(request: int, payload: bytes, nfds: int = 0) -> Payload:
    """Decode the payload of front-end ``request`` that arrived with ``nfds`` fds."""
    try:
        req = Request(request)
    except ValueError:
        raise ProtocolError(f"unknown request {request}") from None
    if req not in SUPPORTED_REQUESTS:
        raise ProtocolError(f"VHOST_USER_{req.name} is not supported by this back-end")
    payload = bytes(payload)
    if req in _NO_PAYLOAD:
        # QEMU sends GET_* with size 0; some front-ends send a u64 of zero.
        if len(payload) not in (0, U64_SIZE):
            _expect(req, payload, 0)
        _expect_fds(req, nfds, 0)
        return None
    if req in _U64_REQUESTS:
        _expect(req, payload, U64_SIZE)
        _expect_fds(req, nfds, 0)
        return int.from_bytes(payload, "little")
    if req in _STATE_REQUESTS:
        _expect(req, payload, VRING_STATE_SIZE)
        _expect_fds(req, nfds, 0)
        s = VhostVringState.from_buffer_copy(payload)
        return VringState(s.index, s.num)
    if req is Request.SET_VRING_ADDR:
        _expect(req, payload, VRING_ADDR_SIZE)
        _expect_fds(req, nfds, 0)
        a = VhostVringAddr.from_buffer_copy(payload)
        return VringAddr(a.index, a.flags, a.descriptor, a.used, a.available, a.log)
    if req in _VRING_FD_REQUESTS:
        _expect(req, payload, U64_SIZE)
        value = int.from_bytes(payload, "little")
        if value & ~(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD_MASK):
            raise ProtocolError(f"VHOST_USER_{req.name}: reserved bits set in {value:#x}")
        no_fd = bool(value & VHOST_USER_VRING_NOFD_MASK)
        _expect_fds(req, nfds, 0 if no_fd else 1)
        return VringFd(value & VHOST_USER_VRING_IDX_MASK, no_fd)
    if req is Request.SET_MEM_TABLE:
        return _parse_mem_table(payload, nfds)
    if req is Request.SET_BACKEND_REQ_FD:
        # No payload but the socket; QEMU sends size 0, some front-ends a u64.
        if len(payload) not in (0, U64_SIZE):
            _expect(req, payload, 0)
        _expect_fds(req, nfds, 1)
        return None
    # GET_CONFIG / SET_CONFIG
    if len(payload) < CONFIG_HEADER_SIZE:
        raise ProtocolError(
            f"VHOST_USER_{req.name}: payload is {len(payload)} bytes, shorter than the "
            f"{CONFIG_HEADER_SIZE}-byte config header"
        )
    c = VhostConfigHeader.from_buffer_copy(payload[:CONFIG_HEADER_SIZE])
    if c.size > VHOST_USER_MAX_CONFIG_SIZE or c.offset > VHOST_USER_MAX_CONFIG_SIZE - c.size:
        raise ProtocolError(
            f"VHOST_USER_{req.name}: offset {c.offset} + size {c.size} is outside the "
            f"{VHOST_USER_MAX_CONFIG_SIZE}-byte config space"
        )
    _expect(req, payload, CONFIG_HEADER_SIZE + c.size)
    _expect_fds(req, nfds, 0)
    return ConfigSpace(c.offset, c.size, c.flags, payload[CONFIG_HEADER_SIZE:])


def _parse_mem_table(payload: bytes, nfds: int) -> MemoryTable:
    req = Request.SET_MEM_TABLE
    if len(payload) < MEM_HEADER_SIZE:
        _expect(req, payload, MEM_HEADER_SIZE)
    n = VhostMemoryHeader.from_buffer_copy(payload[:MEM_HEADER_SIZE]).num_regions
    if not 1 <= n <= VHOST_MEMORY_MAX_NREGIONS:
        raise ProtocolError(
            f"VHOST_USER_SET_MEM_TABLE: {n} regions, expected 1..{VHOST_MEMORY_MAX_NREGIONS}"
        )
    # QEMU sends the full 8-slot array; other front-ends only the used slots.
    if len(payload) not in (
        MEM_HEADER_SIZE + n * MEM_REGION_SIZE,
        MEM_HEADER_SIZE + VHOST_MEMORY_MAX_NREGIONS * MEM_REGION_SIZE,
    ):
        raise ProtocolError(
            f"VHOST_USER_SET_MEM_TABLE: payload is {len(payload)} bytes, expected "
            f"{MEM_HEADER_SIZE + n * MEM_REGION_SIZE} for {n} regions"
        )
    _expect_fds(req, nfds, n)
    regions = []
    for i in range(n):
        off = MEM_HEADER_SIZE + i * MEM_REGION_SIZE
        r = VhostMemoryRegion.from_buffer_copy(payload[off : off + MEM_REGION_SIZE])
        if r.size == 0 or r.guest_addr + r.size > 1 << 64 or r.user_addr + r.size > 1 << 64:
            raise ProtocolError(
                f"VHOST_USER_SET_MEM_TABLE: region {i} (guest {r.guest_addr:#x}, size "
                f"{r.size:#x}) is empty or wraps around"
            )
        regions.append(MemoryRegion(r.guest_addr, r.size, r.user_addr, r.mmap_offset))
    return MemoryTable(tuple(regions))


# -- encoding --------------------------------------------------------------------------------


def encode(
    request: int, payload: bytes = b"", *, reply: bool = False, need_reply: bool = False
) -> bytes:
    """A whole message: header + payload (for replies and for test front-ends)."""
    flags = VHOST_USER_VERSION
    flags |= VHOST_USER_REPLY_MASK if reply else 0
    flags |= VHOST_USER_NEED_REPLY_MASK if need_reply else 0
    return bytes(VhostUserHeader(request, flags, len(payload))) + payload


def u64(value: int) -> bytes:
    return value.to_bytes(U64_SIZE, "little")


def vring_state(index: int, num: int) -> bytes:
    return bytes(VhostVringState(index, num))


def vring_addr(
    index: int, descriptor: int, used: int, available: int, *, flags: int = 0, log: int = 0
) -> bytes:
    return bytes(VhostVringAddr(index, flags, descriptor, used, available, log))


def mem_table(regions: list[MemoryRegion]) -> bytes:
    out = bytes(VhostMemoryHeader(len(regions), 0))
    for r in regions:
        out += bytes(VhostMemoryRegion(r.guest_addr, r.size, r.user_addr, r.mmap_offset))
    return out


def config_space(offset: int, data: bytes, *, size: int | None = None, flags: int = 0) -> bytes:
    n = len(data) if size is None else size
    return bytes(VhostConfigHeader(offset, n, flags)) + data

"""A tiny ACPI Machine Language encoder: static data objects only.

Encodings follow ACPI 6.4 §20 ("ACPI Machine Language Specification"):
§20.2.2 name objects (NameSeg, RootChar, DualNamePrefix, MultiNamePrefix),
§20.2.3 data objects (ZeroOp/OneOp, Byte/Word/DWord/QWordPrefix, StringPrefix),
§20.2.4 PkgLength, §20.2.5 ScopeOp, NameOp, DeviceOp, PackageOp, BufferOp.
Resource descriptors follow §6.4 (small/large resource data types).

There are no methods here on purpose: a DSDT without control methods (and so
without loops) is evaluated instantly even by an emulated guest CPU
(TEST-HOST.md: a looping ``_PRT`` costs tens of seconds per device).
Every function returns ``bytes``; composite objects take already-encoded
children, so a DSDT body is a plain nested expression.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

ZERO_OP = 0x00
ONE_OP = 0x01
NAME_OP = 0x08
BYTE_PREFIX = 0x0A
WORD_PREFIX = 0x0B
DWORD_PREFIX = 0x0C
STRING_PREFIX = 0x0D
QWORD_PREFIX = 0x0E
SCOPE_OP = 0x10
BUFFER_OP = 0x11
PACKAGE_OP = 0x12
EXT_OP_PREFIX = 0x5B
DEVICE_OP = 0x82  # after EXT_OP_PREFIX
DUAL_NAME_PREFIX = 0x2E
MULTI_NAME_PREFIX = 0x2F
ROOT_CHAR = 0x5C
PARENT_PREFIX = 0x5E

_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def pkg_length(body_len: int) -> bytes:
    """PkgLength for a body of ``body_len`` bytes; the value counts its own bytes (§20.2.4)."""
    if body_len + 1 < 0x40:
        return bytes([body_len + 1])
    for extra in (1, 2, 3):
        total = body_len + 1 + extra
        if total < 1 << (4 + 8 * extra):
            out = [(extra << 6) | (total & 0xF)]
            out += [(total >> (4 + 8 * i)) & 0xFF for i in range(extra)]
            return bytes(out)
    raise ValueError(f"AML package of {body_len} bytes is too large")


def _name_seg(seg: str) -> bytes:
    if not 1 <= len(seg) <= 4 or not set(seg) <= _NAME_CHARS or seg[0].isdigit():
        raise ValueError(f"invalid AML name segment {seg!r}")
    return seg.ljust(4, "_").encode()


def name_string(path: str) -> bytes:
    """Encode ``\\_SB.PCI0``, ``^FOO``, ``_S5_``... as a NameString (§20.2.2)."""
    prefix = b""
    while path.startswith(("\\", "^")):
        prefix += bytes([ROOT_CHAR if path[0] == "\\" else PARENT_PREFIX])
        path = path[1:]
    segs = [_name_seg(s) for s in path.split(".")] if path else []
    if not segs:
        return prefix + b"\0"  # NullName
    if len(segs) == 1:
        return prefix + segs[0]
    if len(segs) == 2:
        return prefix + bytes([DUAL_NAME_PREFIX]) + b"".join(segs)
    return prefix + bytes([MULTI_NAME_PREFIX, len(segs)]) + b"".join(segs)


def integer(value: int) -> bytes:
    """The shortest encoding of an integer constant (§20.2.3)."""
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"AML integer {value} is out of range")
    if value == 0:
        return bytes([ZERO_OP])
    if value == 1:
        return bytes([ONE_OP])
    for prefix, fmt, limit in (
        (BYTE_PREFIX, "<B", 1 << 8),
        (WORD_PREFIX, "<H", 1 << 16),
        (DWORD_PREFIX, "<I", 1 << 32),
    ):
        if value < limit:
            return bytes([prefix]) + struct.pack(fmt, value)
    return bytes([QWORD_PREFIX]) + struct.pack("<Q", value)


def string(text: str) -> bytes:
    """A null-terminated ASCII string constant."""
    data = text.encode("ascii")
    if 0 in data:
        raise ValueError("AML strings cannot contain NUL")
    return bytes([STRING_PREFIX]) + data + b"\0"


def eisa_id(text: str) -> bytes:
    """``EisaId("PNP0A03")``: three letters in 5 bits each + four hex digits, as a DWord."""
    if len(text) != 7 or not text[:3].isalpha() or not text[:3].isupper():
        raise ValueError(f"invalid EISA id {text!r}")
    letters = (ord(text[0]) - 0x40) << 10 | (ord(text[1]) - 0x40) << 5 | (ord(text[2]) - 0x40)
    raw = struct.pack(">HH", letters, int(text[3:], 16))
    return integer(struct.unpack("<I", raw)[0])


def name(path: str, value: bytes) -> bytes:
    """``Name(path, value)``; ``value`` is an encoded data object."""
    return bytes([NAME_OP]) + name_string(path) + value


def package(elements: Iterable[bytes]) -> bytes:
    """``Package() {...}`` of encoded data objects (at most 255 elements)."""
    items = list(elements)
    if len(items) > 255:
        raise ValueError("an AML Package holds at most 255 elements")
    body = bytes([len(items)]) + b"".join(items)
    return bytes([PACKAGE_OP]) + pkg_length(len(body)) + body


def buffer(data: bytes) -> bytes:
    """``Buffer() {...}`` holding ``data``."""
    body = integer(len(data)) + data
    return bytes([BUFFER_OP]) + pkg_length(len(body)) + body


def scope(path: str, children: Iterable[bytes]) -> bytes:
    body = name_string(path) + b"".join(children)
    return bytes([SCOPE_OP]) + pkg_length(len(body)) + body


def device(path: str, children: Iterable[bytes]) -> bytes:
    body = name_string(path) + b"".join(children)
    return bytes([EXT_OP_PREFIX, DEVICE_OP]) + pkg_length(len(body)) + body


# -- resource descriptors (§6.4) --------------------------------------------------

RES_TYPE_MEMORY = 0
RES_TYPE_IO = 1
RES_TYPE_BUS = 2
#: General flags (§6.4.3.5.1): producer, positive decode, min and max fixed.
ADDR_CONSUMER = 1 << 0
ADDR_MIN_FIXED = 1 << 2
ADDR_MAX_FIXED = 1 << 3
#: Type-specific flags: memory read-write + cacheable; I/O "entire range".
MEM_READ_WRITE = 1 << 0
MEM_CACHEABLE = 1 << 1
IO_ENTIRE_RANGE = 0x3


def io_port(base: int, length: int, align: int = 1) -> bytes:
    """``IO(Decode16, base, base, align, length)``: small item 0x47 (§6.4.2.5)."""
    return struct.pack("<BBHHBB", 0x47, 1, base, base, align, length)


def irq_no_flags(*irqs: int) -> bytes:
    """``IRQNoFlags() {irqs}``: small item 0x22, a 16-bit IRQ mask (§6.4.2.1)."""
    mask = 0
    for irq in irqs:
        mask |= 1 << irq
    return struct.pack("<BH", 0x22, mask)


def _address_space(
    kind: int, fmt: str, code: int, tflags: int, lo: int, hi: int, consumer: bool = False
) -> bytes:
    if not 0 <= lo <= hi:
        raise ValueError(f"address range {lo:#x}..{hi:#x} is empty or negative")
    gflags = ADDR_MIN_FIXED | ADDR_MAX_FIXED | (ADDR_CONSUMER if consumer else 0)
    body = struct.pack("<BBB" + fmt * 5, kind, gflags, tflags, 0, lo, hi, 0, hi - lo + 1)
    return struct.pack("<BH", code, len(body)) + body


def word_bus_number(lo: int, hi: int) -> bytes:
    return _address_space(RES_TYPE_BUS, "H", 0x88, 0, lo, hi)


def word_io(lo: int, hi: int) -> bytes:
    return _address_space(RES_TYPE_IO, "H", 0x88, IO_ENTIRE_RANGE, lo, hi)


def dword_memory(lo: int, hi: int) -> bytes:
    return _address_space(RES_TYPE_MEMORY, "I", 0x87, MEM_READ_WRITE | MEM_CACHEABLE, lo, hi)


def qword_memory(lo: int, hi: int, *, consumer: bool = False) -> bytes:
    tflags = MEM_READ_WRITE | MEM_CACHEABLE
    return _address_space(RES_TYPE_MEMORY, "Q", 0x8A, tflags, lo, hi, consumer)


def resource_template(descriptors: Iterable[bytes]) -> bytes:
    """``ResourceTemplate() {...}``: the descriptors plus an End Tag (checksum 0 = none)."""
    return buffer(b"".join(descriptors) + bytes([0x79, 0x00]))

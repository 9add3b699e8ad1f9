"""Decode the MP table with struct layouts taken from the MP spec 1.4 §4 tables."""

import struct

import pytest

from kvmlite.arch.x86 import layout
from kvmlite.arch.x86.mptable import build_mptable, write_mptable
from kvmlite.errors import ConfigError
from kvmlite.memory import MIB, GuestMemory

ENTRY_SIZES = {0: 20, 1: 8, 2: 8, 3: 8, 4: 8}


def decode(mem: GuestMemory, base: int = 0xF0000) -> dict:
    # Linux's way: scan 16-byte boundaries for "_MP_".
    for addr in range(base, base + 0x10000, 16):
        if mem.read(addr, 4) == b"_MP_":
            break
    else:
        raise AssertionError("no floating pointer")
    fp = mem.read(addr, 16)
    assert sum(fp) & 0xFF == 0
    sig, phys, length, rev, _cks, feat1 = struct.unpack_from("<4sIBBBB", fp)
    assert (length, rev, feat1) == (1, 4, 0)
    hdr = mem.read(phys, 44)
    sig, base_len, rev, _c, oem, prod, _oemp, _oems, count, lapic, ext_len, _ec, _r = struct.unpack(
        "<4sHBB8s12sIHHIHBB", hdr
    )
    assert sig == b"PCMP" and rev == 4 and lapic == 0xFEE00000 and ext_len == 0
    table = mem.read(phys, base_len)
    assert sum(table) & 0xFF == 0
    out = {"cpus": [], "buses": {}, "ioapics": [], "ints": [], "lints": []}
    off = 44
    for _ in range(count):
        kind = table[off]
        if kind == 0:
            _, apic_id, _ver, flags, _sig, _feat = struct.unpack_from("<BBBBII", table, off)
            out["cpus"].append((apic_id, flags))
        elif kind == 1:
            _, bus_id, name = struct.unpack_from("<BB6s", table, off)
            out["buses"][name.strip()] = bus_id
        elif kind == 2:
            out["ioapics"].append(struct.unpack_from("<BBBBI", table, off)[1:])
        elif kind == 3:
            out["ints"].append(struct.unpack_from("<BBHBBBB", table, off)[1:])
        elif kind == 4:
            out["lints"].append(struct.unpack_from("<BBHBBBB", table, off)[1:])
        off += ENTRY_SIZES[kind]
    assert off == base_len
    return out


@pytest.mark.parametrize("n", [1, 2, 8, 254])
def test_mptable_decodes(n):
    mem = GuestMemory.from_buffer(bytearray(2 * MIB))
    write_mptable(mem, n, pci_routes=[(1, 0, 16), (3, 2, 18)])
    t = decode(mem)
    assert [c[0] for c in t["cpus"]] == list(range(n))
    assert t["cpus"][0][1] == 3 and all(f == 1 for _, f in t["cpus"][1:])
    assert set(t["buses"]) == {b"ISA", b"PCI"} and t["buses"][b"PCI"] == 0
    assert t["ioapics"] == [(n, 0x11, 1, layout.IOAPIC_ADDR)]
    isa = t["buses"][b"ISA"]
    isa_map = {irq: pin for typ, _f, bus, irq, _a, pin in t["ints"] if bus == isa and typ == 0}
    assert isa_map[0] == 2 and all(isa_map[i] == i for i in range(16) if i not in (0, 2))
    assert (3, 0, isa, 0, n, 0) in t["ints"]  # ExtINT on pin 0
    pci = [
        (bus_irq >> 2, bus_irq & 3, pin, flags)
        for typ, flags, bus, bus_irq, _a, pin in t["ints"]
        if bus == 0
    ]
    assert pci == [(1, 0, 16, 0xF), (3, 2, 18, 0xF)]
    assert sorted((typ, pin) for typ, _f, _b, _i, _d, pin in t["lints"]) == [(1, 1), (3, 0)]


def test_mptable_rejects_bad_input():
    with pytest.raises(ConfigError):
        build_mptable(0)
    with pytest.raises(ConfigError):
        build_mptable(255)
    with pytest.raises(ConfigError, match="PCI route"):
        build_mptable(1, pci_routes=[(32, 0, 16)])

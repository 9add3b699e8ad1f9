"""Vcpu.run(): typed exits from real guests, with data direction through the kvm_run page."""

from __future__ import annotations

import struct
from pathlib import Path

from kvmlite.kvm import HltExit, IoExit, MmioExit

# Real mode at 0x1000:  mov dx,0x3f8; mov al,'A'; out dx,al; in al,dx; mov [0x2000],al;
#                       in ax,dx; mov [0x2002],ax; hlt
OUT_IN_HLT = bytes.fromhex("baf803b041eeeca20020ed a30220f4".replace(" ", ""))
# Real mode: mov si,0x2000; mov cx,5; mov dx,0x3f8; cld; rep outsb; hlt
REP_OUTSB = bytes.fromhex("be0020b90500baf803fcf36ef4")


def test_port_out_in_and_hlt(machine) -> None:
    machine.load_real_mode(OUT_IN_HLT)
    out = machine.vcpu.run()
    assert isinstance(out, IoExit)
    assert (out.port, out.size, out.is_write, out.count) == (0x3F8, 1, True, 1)
    assert bytes(out.data) == b"A"

    inb = machine.vcpu.run()
    assert isinstance(inb, IoExit)
    assert (inb.port, inb.size, inb.is_write, inb.count) == (0x3F8, 1, False, 1)
    inb.data[0] = 0x5A  # the IN result, written in place into the kvm_run page

    inw = machine.vcpu.run()
    assert isinstance(inw, IoExit) and not inw.is_write and inw.size == 2
    inw.data[:] = b"\x34\x12"

    assert isinstance(machine.vcpu.run(), HltExit)
    assert machine.mem.read(0x2000, 1) == b"\x5a"
    assert machine.mem.read_int(0x2002, 2) == 0x1234
    assert machine.vcpu.get_regs().rip == 0x1000 + len(OUT_IN_HLT)


def test_rep_outsb_delivers_all_bytes(machine) -> None:
    machine.mem.write(0x2000, b"hello")
    machine.load_real_mode(REP_OUTSB)
    data, count = b"", 0
    while True:
        ex = machine.vcpu.run()
        if isinstance(ex, HltExit):
            break
        assert isinstance(ex, IoExit) and ex.is_write and ex.port == 0x3F8 and ex.size == 1
        assert len(ex.data) == ex.count
        data += bytes(ex.data)
        count += ex.count
    assert (data, count) == (b"hello", 5)


def test_hello_guest_prints_and_exits(machine, flat_guests: dict[str, Path]) -> None:
    machine.load_flat(flat_guests["hello"])
    code, serial, others = machine.run_until_debug_exit()
    assert (code, serial, others) == (0, b"hello\n", [])


def test_pio_loop_guest(machine, flat_guests: dict[str, Path]) -> None:
    machine.load_flat(flat_guests["pio_loop"])
    ask = machine.vcpu.run()
    assert isinstance(ask, IoExit) and (ask.port, ask.size, ask.is_write) == (0x511, 4, False)
    ask.data[:] = (300).to_bytes(4, "little")
    values = []
    while True:
        ex = machine.vcpu.run()
        assert isinstance(ex, IoExit) and ex.is_write
        if ex.port == 0x501:
            break
        assert (ex.port, ex.size) == (0x510, 1)
        values.append(ex.data[0])
    assert values == [i & 0xFF for i in range(300)]


def test_mmio_guest_outside_ram(machine, flat_guests: dict[str, Path]) -> None:
    machine.load_flat(flat_guests["mmio"])
    base = 0xD0000000
    seen = []
    while len(seen) < 5:
        ex = machine.vcpu.run()
        assert isinstance(ex, MmioExit), ex
        seen.append((ex.address - base, ex.length, ex.is_write, bytes(ex.data)))
        if not ex.is_write:
            fill = {4: b"\x44\x33\x22\x11", 8: bytes(range(0xA1, 0xA9))}[ex.length]
            ex.data[:] = fill
    assert seen[0] == (0, 4, True, struct.pack("<I", 0x12345678))
    assert seen[1][:3] == (4, 4, False)
    assert seen[2] == (8, 1, True, b"\xab")
    assert seen[3][:3] == (16, 8, False)
    assert seen[4] == (0x20, 2, True, struct.pack("<H", 0xBEEF))
    code, _, echoes = machine.run_until_debug_exit()
    assert code == 0
    assert echoes == [
        (0x512, b"\x44\x33\x22\x11"),
        (0x513, bytes(range(0xA1, 0xA5))),
        (0x513, bytes(range(0xA5, 0xA9))),
    ]


def test_halt_guest(machine, flat_guests: dict[str, Path]) -> None:
    machine.load_flat(flat_guests["halt"])
    first = machine.vcpu.run()
    assert isinstance(first, IoExit) and bytes(first.data) == b"H"
    assert isinstance(machine.vcpu.run(), HltExit)
    assert isinstance(machine.vcpu.run(), HltExit)  # halts again: it loops on hlt


def test_translate(machine, flat_guests: dict[str, Path]) -> None:
    machine.load_real_mode(b"\xf4")
    assert machine.vcpu.translate(0x1234) == 0x1234  # real mode: no paging
    m = machine
    m.load_flat(flat_guests["hello"])
    m.run_until_debug_exit()
    # The startup identity-maps 4 GiB with 2 MiB pages and nothing above.
    assert m.vcpu.translate(0xD0000123) == 0xD0000123
    assert m.vcpu.translate(0x1_0000_0000) is None

"""Synthetic kernel images built from the specs (boot.rst, ELF gABI), for the loader tests."""

from __future__ import annotations

import struct


def make_bzimage(
    *,
    kernel: bytes = b"\x90" * 4096,
    setup_sects: int = 4,
    version: int = 0x020F,
    xloadflags: int = 0x3,
    loadflags: int = 0x01,
    relocatable: int = 1,
    pref_address: int = 0x1000000,
    init_size: int = 0x200000,
    cmdline_size: int = 2047,
    initrd_addr_max: int = 0x7FFFFFFF,
    syssize: int | None = None,
) -> bytes:
    """A bzImage whose setup header is written field by field at boot.rst's offsets."""
    setup = bytearray((setup_sects + 1) * 512)
    kernel = kernel.ljust((len(kernel) + 15) // 16 * 16, b"\0")
    put = lambda off, fmt, v: struct.pack_into(fmt, setup, off, v)  # noqa: E731
    put(0x1F1, "<B", setup_sects)
    put(0x1F4, "<I", len(kernel) // 16 if syssize is None else syssize)
    put(0x1FE, "<H", 0xAA55)
    put(0x200, "<B", 0xEB)  # jmp short
    put(0x201, "<B", 0x6A)  # header runs to 0x26C
    setup[0x202:0x206] = b"HdrS"
    put(0x206, "<H", version)
    put(0x211, "<B", loadflags)
    put(0x214, "<I", 0x100000)
    put(0x22C, "<I", initrd_addr_max)
    put(0x230, "<I", 0x200000)
    put(0x234, "<B", relocatable)
    put(0x236, "<H", xloadflags)
    put(0x238, "<I", cmdline_size)
    put(0x258, "<Q", pref_address)
    put(0x260, "<I", init_size)
    return bytes(setup) + kernel


PT_LOAD = 1
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    namez = name + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(namez), len(desc), ntype) + pad(namez) + pad(desc)


def make_elf(
    segments: list[tuple[int, bytes, int]],
    *,
    notes: bytes | None = None,
    elf64: bool = True,
    machine: int | None = None,
    entry: int = 0x1000000,
) -> bytes:
    """An ELF executable: segments are (p_paddr, file bytes, p_memsz); notes in a PT_NOTE."""
    if machine is None:
        machine = 62 if elf64 else 3
    ehsize, phentsize = (64, 56) if elf64 else (52, 32)
    phdrs = [(PT_LOAD, paddr, data, memsz) for paddr, data, memsz in segments]
    if notes is not None:
        phdrs.append((PT_NOTE, 0, notes, len(notes)))
    offset = ehsize + phentsize * len(phdrs)
    body = b""
    table = b""
    for ptype, paddr, data, memsz in phdrs:
        off = offset + len(body)
        if elf64:
            table += struct.pack(
                "<IIQQQQQQ",
                ptype,
                5,
                off,
                paddr | 0xFFFFFFFF80000000,
                paddr,
                len(data),
                memsz,
                0x1000,
            )
        else:
            table += struct.pack("<IIIIIIII", ptype, off, paddr, paddr, len(data), memsz, 5, 0x1000)
        body += data + b"\0" * (-len(data) % 8)
    ident = b"\x7fELF" + bytes([2 if elf64 else 1, 1, 1]) + bytes(9)
    if elf64:
        hdr = ident + struct.pack(
            "<HHIQQQIHHHHHH",
            2,
            machine,
            1,
            entry,
            ehsize,
            0,
            0,
            ehsize,
            phentsize,
            len(phdrs),
            64,
            0,
            0,
        )
    else:
        hdr = ident + struct.pack(
            "<HHIIIIIHHHHHH",
            2,
            machine,
            1,
            entry,
            ehsize,
            0,
            0,
            ehsize,
            phentsize,
            len(phdrs),
            40,
            0,
            0,
        )
    return hdr + table + body


def pvh_note(entry: int, elf64: bool = True) -> bytes:
    return note(b"Xen", XEN_ELFNOTE_PHYS32_ENTRY, struct.pack("<I", entry))

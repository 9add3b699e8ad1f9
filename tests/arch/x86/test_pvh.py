import ctypes
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmlite.arch.x86 import layout
from kvmlite.arch.x86.elf import parse_elf
from kvmlite.arch.x86.pvh import load_pvh
from kvmlite.errors import ImageError
from kvmlite.memory import MIB, GuestMemory

from .images import make_elf, note, pvh_note

TEXT = bytes(range(256)) * 16


def mem(size=32 * MIB):
    return GuestMemory.from_buffer(bytearray(size))


def kernel(elf64=True, entry=0x1000100):
    desc = struct.pack("<Q" if elf64 else "<I", entry)
    notes = note(b"GNU", 3, b"abcd") + note(b"Xen", 18, desc)
    return make_elf([(0x1000000, TEXT, len(TEXT) + 8192)], notes=notes, elf64=elf64)


def test_start_info_sizes():
    from kvmlite.arch.x86.pvh import HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo

    assert ctypes.sizeof(HvmStartInfo) == 56
    # offsets from the comment table in start_info.h
    assert HvmStartInfo.modlist_paddr.offset == 0x10 and HvmStartInfo.cmdline_paddr.offset == 0x18
    assert HvmStartInfo.rsdp_paddr.offset == 0x20 and HvmStartInfo.memmap_paddr.offset == 0x28
    assert HvmStartInfo.memmap_entries.offset == 0x30
    assert ctypes.sizeof(HvmModlistEntry) == 32 and ctypes.sizeof(HvmMemmapTableEntry) == 24


@pytest.mark.parametrize("elf64", [True, False])
def test_load_pvh(elf64):
    m = mem()
    m.fill(0x1000000 + len(TEXT), 8192, 0xCC)  # the .bss must come back zeroed
    initrd = b"cpio" * 3000
    plan = load_pvh(m, kernel(elf64), "console=ttyS0", initrd, rsdp_addr=0xE0000)
    assert plan.mode == "pvh32" and plan.entry == 0x1000100
    assert m.read(0x1000000, len(TEXT)) == TEXT
    assert m.read(0x1000000 + len(TEXT), 8192) == bytes(8192)
    # hvm_start_info decoded with start_info.h's layout
    magic, version, _flags, nr_mod, modlist, cmdline, rsdp, memmap, n_mem, _r = struct.unpack(
        "<IIIIQQQQII", m.read(plan.boot_info, 56)
    )
    assert (magic, version, nr_mod, rsdp) == (0x336EC578, 1, 1, 0xE0000)
    assert m.read(cmdline, 14) == b"console=ttyS0\0"
    paddr, size, _c, _r = struct.unpack("<QQQQ", m.read(modlist, 32))
    assert size == len(initrd) and m.read(paddr, size) == initrd and paddr % 4096 == 0
    assert paddr >= plan.kernel_end
    entries = [struct.unpack("<QQII", m.read(memmap + 24 * i, 24))[:3] for i in range(n_mem)]
    assert entries == [(e.addr, e.size, e.type) for e in layout.e820_map(m)]
    st_ = plan.cpu_state()
    assert st_.gprs == {"rbx": plan.boot_info} and st_.cr0 & 1 and not st_.cr0 >> 31
    # the GDT exists in memory for the 32-bit selectors
    assert m.read_int(layout.GDT_ADDR + 8, 8) != 0


def test_no_initrd():
    m = mem()
    plan = load_pvh(m, kernel(), "")
    assert plan.initrd_size == 0
    assert struct.unpack_from("<I", m.read(plan.boot_info + 12, 4))[0] == 0


def test_no_pvh_note():
    img = make_elf([(0x1000000, TEXT, len(TEXT))], notes=note(b"GNU", 3, b"abcd"))
    with pytest.raises(ImageError, match="CONFIG_PVH=y or use the bzImage"):
        load_pvh(mem(), img, "")


@pytest.mark.parametrize(
    "image,match",
    [
        (b"\x7fELF", "not an ELF"),
        (b"\x7fELF" + bytes(20), "not a little-endian"),
        (b"MZ" + bytes(100), "not an ELF"),
        (make_elf([(0x1000000, TEXT, len(TEXT))], machine=40), "not x86"),
        (make_elf([(0x1000, TEXT, len(TEXT))]), "boot data"),
        (make_elf([(0x1000000, TEXT, 64 * MIB)]), "more memory"),
        (make_elf([(0x1000000, TEXT, 16)]), "p_filesz > p_memsz"),
        (make_elf([(0x1000000, TEXT, 8192), (0x1001000, TEXT, 8192)]), "overlap"),
        (make_elf([(0x1000000, TEXT, len(TEXT))])[:200], "outside the file"),
        (kernel(entry=0x3000000), "outside the loaded kernel"),
        (make_elf([], notes=pvh_note(0x1000000)), "no loadable segment"),
    ],
)
def test_malformed(image, match):
    with pytest.raises(ImageError, match=match):
        load_pvh(mem(), image, "")


def test_absurd_phnum():
    img = bytearray(kernel())
    struct.pack_into("<H", img, 56, 60000)  # e_phnum
    with pytest.raises(ImageError, match="program header"):
        load_pvh(mem(), bytes(img), "")


def test_note_past_segment():
    bad = struct.pack("<III", 4, 1000, 18) + b"Xen\0"
    with pytest.raises(ImageError, match="note"):
        load_pvh(mem(), make_elf([(0x1000000, TEXT, len(TEXT))], notes=bad), "")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_fuzz_elf(data):
    """Mutated valid kernels: a plan inside RAM or an ImageError, never another exception."""
    img = bytearray(kernel(data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 6))):
        off = data.draw(st.integers(0, len(img) - 1))
        img[off] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(img))))
    m = mem(4 * MIB)
    try:
        plan = load_pvh(m, bytes(img[:cut]), "", b"x" * 64)
    except ImageError:
        return
    assert 1 * MIB <= plan.kernel_addr < plan.kernel_end <= 4 * MIB


@settings(deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_bytes(blob):
    try:
        parse_elf(b"\x7fELF" + blob, mem(4 * MIB))
    except ImageError:
        pass

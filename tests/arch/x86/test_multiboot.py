"""The Multiboot v1 loader against images built from the 0.6.96 spec's field tables."""

import ctypes
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmlite.arch.x86 import biosstate, layout, multiboot
from kvmlite.arch.x86.boot import load_kernel
from kvmlite.arch.x86.multiboot import load_multiboot, parse_header
from kvmlite.errors import ImageError
from kvmlite.memory import MIB, GuestMemory

from .images import make_elf

MAGIC = 0x1BADB002
LOAD = 0x400000


def mem(size=16 * MIB):
    return GuestMemory.from_buffer(bytearray(size))


def header(flags=0, checksum=None, addresses=()):
    if checksum is None:
        checksum = -(MAGIC + flags) & 0xFFFFFFFF
    return struct.pack("<III", MAGIC, flags, checksum) + struct.pack(
        f"<{len(addresses)}I", *addresses
    )


def elf_kernel(flags=0, checksum=None, memsz_extra=4096, paddr=LOAD, entry=None):
    text = header(flags, checksum) + bytes(range(256)) * 4
    entry = paddr + 12 if entry is None else entry
    return make_elf([(paddr, text, len(text) + memsz_extra)], elf64=False, entry=entry)


def aout_kernel(load=LOAD, pad=0x40, body=b"\x90" * 1000, load_end=None, bss_end=None, entry=None):
    """A flat binary with the header at file offset ``pad`` (address fields, flag 16)."""
    size = pad + 32 + len(body)
    fields = (
        load + pad,  # header_addr
        load,
        load + size if load_end is None else load_end,
        load + size + 8192 if bss_end is None else bss_end,
        load + pad + 32 if entry is None else entry,
    )
    return b"\xcc" * pad + header(1 << 16, addresses=fields) + body


def info(m, plan):
    return multiboot.MultibootInfo.from_buffer_copy(m.read(plan.boot_info, 88))


def test_struct_layout():
    # §3.3: offsets of the info fields; module entries 16 bytes; mmap entries size+20.
    mi = multiboot.MultibootInfo
    assert (mi.cmdline.offset, mi.mods_count.offset, mi.mods_addr.offset) == (16, 20, 24)
    assert (mi.mmap_length.offset, mi.mmap_addr.offset, mi.boot_loader_name.offset) == (44, 48, 64)
    assert ctypes.sizeof(multiboot.MultibootModule) == 16
    assert ctypes.sizeof(multiboot.MultibootMmapEntry) == 24


def test_load_elf_kernel_with_module():
    m = mem()
    m.fill(LOAD, 0x2000, 0xCC)
    data = elf_kernel()
    env = b"NR_CPUS=1\nMEMSIZE=16\n"
    plan = load_multiboot(m, data, "-v arg", [(env, "/tmp/env")], rsdp_addr=0xE0000, name="t.flat")
    assert plan.mode == "multiboot32" and plan.entry == biosstate.TRAMPOLINE_ADDR
    # the trampoline ends by jumping to the kernel's entry: mov ecx, entry; jmp ecx
    tramp = m.read(plan.entry, 0x100)
    assert struct.pack("<BI", 0xB9, LOAD + 12) + b"\xff\xe1" in tramp
    assert m.read(LOAD, 4) == struct.pack("<I", MAGIC)
    assert m.read(LOAD + 12 + 1024, 4096) == bytes(4096)  # bss zeroed
    i = info(m, plan)
    assert i.flags & 0b1001001101 == 0b1001001101  # mem, cmdline, mods, mmap, loader name
    assert i.mem_lower == 639 and i.mem_upper == (16 * MIB - MIB) >> 10
    assert m.read(i.cmdline, 14) == b"t.flat -v arg\0"
    assert i.mods_count == 1
    start, end, string, _ = struct.unpack("<IIII", m.read(i.mods_addr, 16))
    assert m.read(start, end - start) == env and start % 4096 == 0 and start >= plan.kernel_end
    assert m.read(string, 9) == b"/tmp/env\0"
    assert m.read(i.boot_loader_name, 8) == b"kvmlite\0"
    entries = []
    for n in range(i.mmap_length // 24):
        size, base, length, typ = struct.unpack("<IQQI", m.read(i.mmap_addr + 24 * n, 24))
        assert size == 20
        entries.append((base, length, typ))
    assert entries == [(e.addr, e.size, e.type) for e in layout.e820_map(m)]
    state = plan.cpu_state()
    assert state.gprs == {"rax": 0x2BADB002, "rbx": plan.boot_info}
    assert state.cr0 & 1 and not state.cr0 & (1 << 31) and state.cs.db == 1  # 32-bit, no paging
    assert state.rflags & (1 << 9) == 0  # IF clear


def test_no_module_no_flag_and_empty_cmdline():
    m = mem()
    plan = load_multiboot(m, elf_kernel(), "", name="k")
    i = info(m, plan)
    assert not i.flags & (1 << 3) and i.mods_count == 0
    assert m.read(i.cmdline, 2) == b"k\0"


def test_aout_kludge():
    m = mem()
    data = aout_kernel()
    plan = load_multiboot(m, data, "", name="k")
    assert struct.pack("<BI", 0xB9, LOAD + 0x40 + 32) in m.read(plan.entry, 0x100)
    assert m.read(LOAD, len(data)) == data
    assert m.read(LOAD + len(data), 8192) == bytes(8192)
    assert plan.kernel_end == LOAD + len(data) + 8192


def test_kernel_below_1mib_like_realmode_flat():
    # kvm-unit-tests' realmode.flat is linked at 0x8000, just above the info page
    m = mem()
    plan = load_multiboot(m, elf_kernel(paddr=0x8000), "", [(b"env", "e")])
    assert plan.kernel_addr == 0x8000 and m.read(0x8000, 4) == struct.pack("<I", MAGIC)
    start = struct.unpack("<I", m.read(info(m, plan).mods_addr, 4))[0]
    assert start == MIB  # modules stay clear of the loader's data


def test_load_kernel_detects_multiboot(tmp_path):
    (tmp_path / "k.flat").write_bytes(elf_kernel())
    (tmp_path / "env").write_bytes(b"A=1\n")
    m = mem()
    plan = load_kernel(m, tmp_path / "k.flat", tmp_path / "env", "x", num_vcpus=1)
    assert plan.mode == "multiboot32"
    i = info(m, plan)
    assert i.mods_count == 1


BAD = [
    ("bad magic", lambda: elf_kernel().replace(struct.pack("<I", MAGIC), bytes(4)), "no Multiboot"),
    ("bad checksum", lambda: elf_kernel(checksum=0x1234), "wrong checksum"),
    ("unknown requirement", lambda: elf_kernel(flags=1 << 5), "requires features 0x20"),
    ("not ELF without kludge", lambda: b"\0" * 64 + header(0) + bytes(64), "must be an ELF"),
    ("segment outside RAM", lambda: elf_kernel(paddr=15 * MIB, memsz_extra=2 * MIB), "fit"),
    ("segment over the info", lambda: elf_kernel(paddr=0x7000), "Multiboot information"),
    ("segment over the GDT", lambda: elf_kernel(paddr=0x0), "boot GDT"),
    ("segment over cmdline", lambda: elf_kernel(paddr=0x1F000), "command line"),
    ("segment over firmware", lambda: elf_kernel(paddr=0xE0000), "firmware tables"),
    ("entry outside", lambda: elf_kernel(entry=0x100), "outside the loaded kernel"),
    ("aout over the info", lambda: aout_kernel(load=0x6000), "Multiboot information"),
    ("aout outside RAM", lambda: aout_kernel(bss_end=LOAD + 64 * MIB), "does not fit"),
    ("aout truncated", lambda: aout_kernel(load_end=LOAD + 0x10000), "truncated"),
    ("aout bss below end", lambda: aout_kernel(bss_end=LOAD + 8), "bss_end_addr"),
    (
        "aout header below load",
        lambda: header(1 << 16, addresses=(LOAD, LOAD + 4, 0, 0, LOAD)),
        "header_addr",
    ),
    (
        "aout load before file",
        lambda: header(1 << 16, addresses=(LOAD, LOAD - 64, 0, 0, LOAD)),
        "before the start",
    ),
    ("aout entry outside", lambda: aout_kernel(entry=LOAD - 4), "entry"),
    ("aout fields truncated", lambda: header(1 << 16, addresses=(LOAD, LOAD)), "address fields"),
    ("truncated ELF", lambda: elf_kernel()[:100], "outside the file"),
]


@pytest.mark.parametrize("what,make,message", BAD, ids=[b[0] for b in BAD])
def test_malformed_kernels_load_nothing(what, make, message):
    m = mem()
    before = m.read(0, 16 * MIB)
    with pytest.raises(ImageError, match=message):
        load_multiboot(m, make(), "cmd", [(b"env", "e")], name="k")
    assert m.read(0, 16 * MIB) == before


def test_too_many_modules():
    m = mem()
    mods = [(b"x", "m")] * (multiboot.MAX_MODULES + 1)
    with pytest.raises(ImageError, match="at most 64"):
        load_multiboot(m, elf_kernel(), "", mods)
    assert m.read(LOAD, 4) == bytes(4)


def test_module_does_not_fit():
    m = mem()
    with pytest.raises(ImageError, match="does not fit"):
        load_multiboot(m, elf_kernel(), "", [(bytes(13 * MIB), "big")])
    assert m.read(LOAD, 4) == bytes(4)


def test_strings_too_long_or_nul():
    with pytest.raises(ImageError, match="shorten"):
        load_multiboot(mem(), elf_kernel(), "x" * layout.CMDLINE_MAX)
    with pytest.raises(ImageError, match="NUL"):
        load_multiboot(mem(), elf_kernel(), "a\0b")


def test_header_beyond_8k_is_not_found():
    data = bytes(8192) + header(0)
    assert not multiboot.is_multiboot(data)
    assert multiboot.is_multiboot(bytes(8180) + header(0))
    assert not multiboot.is_multiboot(bytes(2) + header(0))  # not 4-byte aligned


def test_second_header_with_good_checksum_wins():
    data = header(0, checksum=5) + header(1 << 1) + bytes(32)
    h = parse_header(data)
    assert h.offset == 12 and h.flags == 2


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.binary(max_size=200),
    st.integers(0, 0xFFFFFFFF),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=5),
    st.booleans(),
)
def test_fuzz_parser_only_raises_image_error(junk, flags, addresses, good_checksum):
    checksum = None if good_checksum else 7
    data = junk[: len(junk) // 4 * 4] + header(flags, checksum, addresses) + junk
    m = GuestMemory.from_buffer(bytearray(8 * MIB))
    try:
        plan = load_multiboot(m, data, "c", [(b"e", "e")])
    except ImageError:
        return
    assert layout.KERNEL_LOAD_ADDR <= plan.kernel_addr < plan.kernel_end <= 8 * MIB


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data):
    try:
        parse_header(data)
    except ImageError:
        pass

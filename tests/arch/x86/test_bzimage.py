import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmlite.arch.x86 import layout
from kvmlite.arch.x86.bootparams import BootParams
from kvmlite.arch.x86.bzimage import load_bzimage, parse_setup_header
from kvmlite.errors import ImageError
from kvmlite.memory import MIB, GuestMemory

from .images import make_bzimage


def mem(size=64 * MIB):
    return GuestMemory.from_buffer(bytearray(size))


def zero_page(m):
    return BootParams.from_buffer_copy(m.read(layout.ZERO_PAGE_ADDR, 4096))


def test_load_places_everything():
    kernel = bytes(range(256)) * 64
    m = mem()
    initrd = b"INITRD" * 1000
    plan = load_bzimage(m, make_bzimage(kernel=kernel), "console=ttyS0", initrd, rsdp_addr=0xE0000)
    assert plan.mode == "long64" and plan.kernel_addr == 0x1000000  # pref_address
    assert plan.entry == plan.kernel_addr + 0x200 and plan.boot_info == layout.ZERO_PAGE_ADDR
    assert m.read(plan.kernel_addr, len(kernel)) == kernel
    zp = zero_page(m)
    h = zp.hdr
    assert h.type_of_loader == 0xFF and h.loadflags & 0x81 == 0x81 and h.heap_end_ptr
    assert h.cmd_line_ptr == layout.CMDLINE_ADDR
    assert m.read(h.cmd_line_ptr, 14) == b"console=ttyS0\0"
    assert (h.ramdisk_image, h.ramdisk_size) == (plan.initrd_addr, len(initrd))
    assert h.ramdisk_image % 4096 == 0 and h.ramdisk_image + h.ramdisk_size <= 64 * MIB
    assert h.ramdisk_image + 4096 + len(initrd) > 64 * MIB  # as high as possible
    assert m.read(h.ramdisk_image, len(initrd)) == initrd
    assert h.version == 0x020F and h.setup_sects == 4  # copied from the file
    assert zp.acpi_rsdp_addr == 0xE0000
    e820 = [
        (zp.e820_table[i].addr, zp.e820_table[i].size, zp.e820_table[i].type)
        for i in range(zp.e820_entries)
    ]
    assert e820 == [(e.addr, e.size, e.type) for e in layout.e820_map(m)]
    # the long-mode plan points at the page tables written for it
    st_ = plan.cpu_state()
    assert st_.gprs["rsi"] == layout.ZERO_PAGE_ADDR and m.read_int(st_.cr3, 8) & 1


def test_initrd_below_initrd_addr_max():
    m = mem()
    plan = load_bzimage(m, make_bzimage(initrd_addr_max=0x2FFFFFF), "", b"x" * 5000)
    assert plan.initrd_addr + 5000 <= 0x3000000


def test_small_memory_refused():
    """The decompressor needs pref_address + init_size (18 MiB here) wherever it is loaded."""
    with pytest.raises(ImageError, match="needs 18 MiB"):
        load_bzimage(mem(16 * MIB), make_bzimage(), "")


def test_not_relocatable_loads_at_1mib():
    plan = load_bzimage(mem(), make_bzimage(relocatable=0), "", b"x" * 100)
    assert plan.kernel_addr == 0x100000
    assert plan.kernel_end == 0x1000000 + 0x200000 <= plan.initrd_addr


@pytest.mark.parametrize(
    "image,match",
    [
        (b"\0" * 8192, "not a bzImage"),
        (b"", "not a bzImage"),
        (make_bzimage()[:3000], "truncated"),
        (make_bzimage(syssize=10000), "truncated"),
        (make_bzimage(version=0x0204), "2.04"),
        (make_bzimage(xloadflags=0), "64-bit entry"),
        (make_bzimage(loadflags=0), "zImage"),
        (make_bzimage(init_size=200 * MIB), "more memory"),
    ],
)
def test_malformed(image, match):
    with pytest.raises(ImageError, match=match):
        load_bzimage(mem(), image, "")


def test_cmdline_too_long():
    with pytest.raises(ImageError, match="at most 10"):
        load_bzimage(mem(), make_bzimage(cmdline_size=10), "x" * 11)
    load_bzimage(mem(), make_bzimage(cmdline_size=10), "x" * 10)


def test_initrd_too_large():
    with pytest.raises(ImageError, match="initrd"):
        load_bzimage(mem(32 * MIB), make_bzimage(), "", b"x" * (15 * MIB))


def test_bad_boot_flag():
    img = bytearray(make_bzimage())
    struct.pack_into("<H", img, 0x1FE, 0x1234)
    with pytest.raises(ImageError, match="0xaa55"):
        parse_setup_header(bytes(img))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_fuzz_header_fields(data):
    """Any bytes in the setup header: a plan or an ImageError, never another exception."""
    img = bytearray(make_bzimage(kernel=b"\x90" * 512))
    for _ in range(data.draw(st.integers(0, 8))):
        off = data.draw(st.integers(0x1F1, 0x26B))
        img[off] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(img))))
    if cut is not None:
        img = img[:cut]
    m = mem(8 * MIB)
    try:
        plan = load_bzimage(m, bytes(img), "console=ttyS0", b"i" * 100)
    except ImageError:
        return
    assert plan.kernel_end <= 8 * MIB and plan.initrd_addr >= plan.kernel_end


@settings(deadline=None)
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes(blob):
    try:
        load_bzimage(mem(4 * MIB), blob, "")
    except ImageError:
        pass

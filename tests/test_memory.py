import pytest

from kvmlite.errors import ConfigError, GuestMemoryError
from kvmlite.memory import FOUR_GIB, GIB, PCI_HOLE_START, GuestMemory, layout_x86


def test_layout_small_and_large():
    assert layout_x86(64 << 20) == [(0, 64 << 20)]
    assert layout_x86(4 * GIB) == [(0, PCI_HOLE_START), (FOUR_GIB, GIB)]


def test_create_read_write_and_bounds():
    mem = GuestMemory.create(1 << 20)
    try:
        mem.write(0x1000, b"hello")
        assert mem.read(0x1000, 5) == b"hello"
        mem.write_int(0x2000, 4, 0x12345678)
        assert mem.read(0x2000, 4) == bytes.fromhex("78563412")
        assert mem.read_int(0x2000, 2) == 0x5678
        v = mem.view(0x3000, 4)
        v[:] = b"abcd"
        assert mem.read(0x3000, 4) == b"abcd"
        for gpa, n in [(1 << 20, 1), ((1 << 20) - 2, 4), (-1, 2), (0, (1 << 20) + 1)]:
            with pytest.raises(GuestMemoryError):
                mem.read(gpa, n)
        assert mem.regions[0].fd is not None
    finally:
        mem.close()


def test_memfd_is_shared_between_mappings():
    import mmap

    mem = GuestMemory.create(1 << 20)
    try:
        r = mem.regions[0]
        other = mmap.mmap(r.fd, 4096, mmap.MAP_SHARED)
        mem.write(0, b"shared")
        assert other[:6] == b"shared"
        other.close()
    finally:
        mem.close()


def test_large_guest_splits_around_pci_hole():
    mem = GuestMemory.create(PCI_HOLE_START + (1 << 20))
    try:
        assert [(r.gpa, r.size) for r in mem.regions] == [(0, PCI_HOLE_START), (FOUR_GIB, 1 << 20)]
        mem.write(FOUR_GIB, b"hi")
        assert mem.read(FOUR_GIB, 2) == b"hi"
        with pytest.raises(GuestMemoryError):
            mem.read(PCI_HOLE_START, 1)
        with pytest.raises(GuestMemoryError):  # straddles the end of low RAM
            mem.read(PCI_HOLE_START - 1, 2)
    finally:
        mem.close()


def test_from_buffer():
    mem = GuestMemory.from_buffer(bytearray(16), gpa=0x100)
    mem.write(0x10F, b"x")
    with pytest.raises(GuestMemoryError):
        mem.write(0x110, b"x")


def test_contains_and_region_of_agree_at_every_edge():
    """Two regions with a hole between them (like RAM around the PCI hole): the
    per-descriptor check must refuse anything that leaves a region."""
    from kvmlite.memory import Region

    low, high = memoryview(bytearray(0x1000)), memoryview(bytearray(0x1000))
    mem = GuestMemory([Region(0x3000, 0x1000, high), Region(0x1000, 0x1000, low)])
    cases = {
        (0x1000, 0x1000): True,  # the whole low region
        (0x1FFF, 1): True,
        (0x1FFF, 2): False,  # into the hole
        (0x0FFF, 1): False,  # below the first region
        (0x2000, 1): False,  # in the hole
        (0x3000, 0): True,
        (0x3FFF, 1): True,
        (0x4000, 0): True,  # an empty access at the very end
        (0x4000, 1): False,
        (0x1000, -1): False,
        (-5, 1): False,
        (0x1800, 1 << 64): False,
    }
    for (gpa, n), inside in cases.items():
        assert mem.contains(gpa, n) is inside, (hex(gpa), n)
        if inside:
            assert mem.region_of(gpa, n).gpa == (0x1000 if gpa < 0x3000 else 0x3000)
        else:
            with pytest.raises(GuestMemoryError):
                mem.region_of(gpa, n)


def test_from_file_maps_privately(tmp_path) -> None:
    path = tmp_path / "memory"
    data = bytes(range(256)) * 64  # 16 KiB
    path.write_bytes(data)
    mem = GuestMemory.from_file(path, len(data))
    try:
        assert mem.read(0x100, 4) == data[0x100:0x104] and mem.size == len(data)
        mem.write(0, b"guest wrote this")
        assert mem.read(0, 16) == b"guest wrote this"
        assert mem.regions[0].fd is None  # nothing to share
    finally:
        mem.close()
    assert path.read_bytes() == data  # MAP_PRIVATE: the file is unchanged


def test_from_file_refuses_another_size(tmp_path) -> None:
    path = tmp_path / "memory"
    path.write_bytes(bytes(8192))
    with pytest.raises(ConfigError, match="8192 bytes, the snapshot says 12288"):
        GuestMemory.from_file(path, 12288)
    with pytest.raises(ConfigError, match="multiple of 4 KiB"):
        GuestMemory.from_file(path, 100)
    with pytest.raises(ConfigError, match="cannot map"):
        GuestMemory.from_file(tmp_path / "missing", 8192)

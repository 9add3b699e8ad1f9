import struct

import pytest

from kvmlite.arch.x86 import layout
from kvmlite.arch.x86.acpi import Ecam
from kvmlite.arch.x86.boot import load_kernel
from kvmlite.errors import ConfigError, ImageError
from kvmlite.memory import MIB, GuestMemory

from .images import make_bzimage, make_elf, pvh_note


def mem():
    return GuestMemory.from_buffer(bytearray(64 * MIB))


@pytest.fixture
def files(tmp_path):
    bz = tmp_path / "bzImage"
    bz.write_bytes(make_bzimage())
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(make_elf([(0x1000000, b"\xf4" * 4096, 8192)], notes=pvh_note(0x1000000)))
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"070701" * 100)
    return bz, vmlinux, initrd


def write(path, data):
    path.write_bytes(data)
    return path


def rsdp_in(m):
    return [a for a in range(0xE0000, 0x100000, 16) if m.read(a, 8) == b"RSD PTR "]


def test_bzimage_path(files):
    bz, _, initrd = files
    m = mem()
    plan = load_kernel(m, bz, initrd, "console=ttyS0", num_vcpus=2)
    assert plan.mode == "long64" and plan.initrd_size == 600
    assert rsdp_in(m) == [plan.rsdp_addr]
    assert any(m.read(a, 4) == b"_MP_" for a in range(0xF0000, 0x100000, 16))


def test_pvh_path(files):
    _, vmlinux, initrd = files
    m = mem()
    plan = load_kernel(m, vmlinux, initrd, "", num_vcpus=1, ecam=Ecam(0xC0000000, 15))
    assert plan.mode == "pvh32" and plan.entry == 0x1000000
    assert m.read_int(plan.boot_info + 0x20, 8) == plan.rsdp_addr != 0


def test_acpi_off(files):
    bz, _, _ = files
    m = mem()
    plan = load_kernel(m, bz, None, "", num_vcpus=1, acpi=False)
    assert plan.rsdp_addr == 0 and rsdp_in(m) == []


def test_ecam_trimmed_from_window(files):
    """ECAM at the top of the 32-bit window: the DSDT window ends below it."""
    bz, _, _ = files
    m = mem()
    load_kernel(m, bz, None, "", num_vcpus=1, ecam=Ecam(0xF0000000, 255))
    dsdt = m.read(layout.ACPI_ADDR, layout.ACPI_MAX_SIZE)
    assert struct.pack("<II", 0xC0000000, 0xEFFFFFFF) in dsdt
    with pytest.raises(ConfigError, match="ECAM"):
        load_kernel(mem(), bz, None, "", num_vcpus=1, ecam=Ecam(0xD0000000, 15))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p, "is a directory"),
        (lambda p: write(p / "empty", b""), "is empty"),
        (lambda p: write(p / "pe", b"MZ" + bytes(1000)), "neither a bzImage"),
    ],
)
def test_kernel_file_errors(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(ImageError, match=match) as info:
        load_kernel(mem(), path, None, "", num_vcpus=1)
    assert str(path) in str(info.value)


def test_unreadable(tmp_path, monkeypatch):
    """Root bypasses file modes, so make open() fail the way it does for a user."""
    p = tmp_path / "k"
    p.write_bytes(make_bzimage())

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(ImageError, match=f"{p} is not readable"):
        load_kernel(mem(), p, None, "", num_vcpus=1)


def test_initrd_errors(files, tmp_path):
    bz, _, _ = files
    with pytest.raises(ImageError, match="initrd .*does not exist"):
        load_kernel(mem(), bz, tmp_path / "nope", "", num_vcpus=1)
    (tmp_path / "e").write_bytes(b"")
    with pytest.raises(ImageError, match="initrd .*is empty"):
        load_kernel(mem(), bz, tmp_path / "e", "", num_vcpus=1)

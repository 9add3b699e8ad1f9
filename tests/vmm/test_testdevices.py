"""``kvmlite run --test-devices`` on KVM: a tiny Multiboot guest drives pc-testdev and exits
through isa-debug-exit with QEMU's status ``(v << 1) | 1``. Skips only without /dev/kvm."""

import os
import struct

import pytest

from kvmlite.cli import main, make_parser
from kvmlite.cli.run import config_from_args

MAGIC = 0x1BADB002
needs_kvm = pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm")


def elf32(paddr: int, text: bytes, entry: int) -> bytes:
    """An ELF32 executable with one PT_LOAD (System V gABI "ELF Header", "Program Header")."""
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    ehdr = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, entry, 52, 0, 0, 52, 32, 1, 0, 0, 0)
    phdr = struct.pack("<IIIIIIII", 1, 84, paddr, paddr, len(text), len(text), 5, 4)
    return ehdr + phdr + text


def multiboot_guest(tmp_path, code: bytes):
    header = struct.pack("<III", MAGIC, 0, -MAGIC & 0xFFFFFFFF)
    text = header + code + b"\xf4\xeb\xfd"  # hlt; jmp $-1 if the exit did not happen
    path = tmp_path / "guest.elf"
    path.write_bytes(elf32(0x400000, text, entry=0x40000C))
    return path


def test_flag_reaches_the_config():
    args = make_parser(["run"]).parse_args(["run", "--test-devices"])
    assert config_from_args(args).machine.test_devices is True
    assert config_from_args(make_parser(["run"]).parse_args(["run"])).machine.test_devices is False


@needs_kvm
def test_guest_checks_eax_and_exits_through_0xf4(tmp_path):
    code = bytes.fromhex(
        "3d02b0ad2b"  # cmp eax, 0x2BADB002 (Multiboot §3.2)
        "7504"  # jne fail
        "b005"  # mov al, 5
        "eb02"  # jmp out
        "b007"  # fail: mov al, 7
        "e6f4"  # out 0xf4, al
    )
    assert main(["run", "-k", str(multiboot_guest(tmp_path, code)), "-m", "32M",
                 "--test-devices"]) == (5 << 1) | 1  # fmt: skip


@needs_kvm
def test_pc_testdev_scratch_and_iomem(tmp_path):
    code = bytes.fromhex(
        "b878563412"  # mov eax, 0x12345678
        "e7e0"  # out 0xe0, eax
        "31c0"  # xor eax, eax
        "e4e2"  # in al, 0xe2 -> 0x34
        "a3000000ff"  # mov [0xff000000], eax (iomem)
        "31c0"  # xor eax, eax
        "a1000000ff"  # mov eax, [0xff000000]
        "e6f4"  # out 0xf4, al -> status (0x34 << 1 | 1) & 0xff
    )
    status = main(
        ["run", "-k", str(multiboot_guest(tmp_path, code)), "-m", "32M", "--test-devices"]
    )
    assert status == ((0x34 << 1) | 1) & 0xFF


@needs_kvm
def test_without_the_flag_port_0xf4_is_not_an_exit(tmp_path, capsys):
    # kvmlite's own debug-exit (0x501) ends this one with status 9 instead
    code = bytes.fromhex("b001e6f466ba0105b009ee")  # out 0xf4; mov dx,0x501; out dx,al
    assert main(["run", "-k", str(multiboot_guest(tmp_path, code)), "-m", "32M"]) == 9

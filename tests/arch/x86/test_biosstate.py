"""The BIOS-state trampoline and IVT, disassembled by objdump (an independent judge)."""

import shutil
import struct
import subprocess

import pytest

from kvmlite.arch.x86 import biosstate


def disassemble(code: bytes, machine: str, tmp_path) -> list[str]:
    path = tmp_path / "code.bin"
    path.write_bytes(code)
    out = subprocess.run(
        ["objdump", "-D", "-b", "binary", f"-m{machine}", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("\t")[-1].strip() for line in out.splitlines() if ":\t" in line]


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
def test_trampoline_disassembles_to_the_bios_setup(tmp_path):
    insns = disassemble(biosstate.trampoline_bytes(0x400010, 0x2BADB002, 0x7000), "i386", tmp_path)
    outs = [i for i in insns if i.startswith("out")]
    movs = [i for i in insns if i.startswith("mov") and "%al" in i]
    assert len(outs) == 15 and all("%al" in o for o in outs)
    assert "mov    $0x70,%al" in movs and "mov    $0x8,%al" in movs  # vector bases
    assert "mov    $0x4d1,%dx" in insns and "mov    $0x36,%al" in movs
    assert insns[-4:] == [
        "mov    $0x2badb002,%eax",
        "mov    $0x7000,%ebx",
        "mov    $0x400010,%ecx",
        "jmp    *%ecx",
    ]


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
def test_stubs_eoi_and_iret(tmp_path):
    stubs = biosstate.stubs_bytes()
    master = disassemble(stubs[0x10:0x17], "i8086", tmp_path)
    slave = disassemble(stubs[0x20:0x29], "i8086", tmp_path)
    assert master == ["push   %ax", "mov    $0x20,%al", "out    %al,$0x20", "pop    %ax", "iret"]
    assert slave[2:4] == ["out    %al,$0xa0", "out    %al,$0x20"] and slave[-1] == "iret"
    assert stubs[0] == 0xCF


def test_ivt_points_irqs_at_the_eoi_stubs():
    ivt = biosstate.ivt_bytes()
    vec = lambda n: struct.unpack_from("<HH", ivt, 4 * n)  # noqa: E731
    assert len(ivt) == 1024
    assert vec(0x08) == (biosstate.STUBS_ADDR + 0x10, 0) and vec(0x0F)[0] == vec(0x08)[0]
    assert vec(0x70) == (biosstate.STUBS_ADDR + 0x20, 0) and vec(0x77)[0] == vec(0x70)[0]
    assert vec(0x10) == (biosstate.STUBS_ADDR, 0) and vec(0x00) == (biosstate.STUBS_ADDR, 0)
    assert biosstate.STUBS_ADDR + len(biosstate.stubs_bytes()) <= 0x8000

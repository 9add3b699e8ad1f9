"""Build kit for kvmlite's tiny test guests, with the system gcc/as/ld at test time.

A guest is one C (or GNU as ``.S``) file with ``int main(struct hvm_start_info *)`` beside
the shared startup (``start.S``), linker script (``guest.ld``) and "libc" (``lib.h``,
``lib.c``) in the same directory (``GUEST_DIR`` holds kvmlite's own). The startup is
entered in 32-bit protected mode with paging off, EBX = hvm_start_info (or 0), per the
PVH boot protocol (Documentation/x86/boot.rst, "PVH"), builds identity page tables for
the first 4 GiB, enters long mode, calls main and writes its return value to the
debug-exit port 0x501.

Two kinds of output:

``"pvh"``
    an ELF64 linked at 1 MiB with a ``XEN_ELFNOTE_PHYS32_ENTRY`` (type 18, 4-byte
    descriptor) note in a PT_NOTE segment, for a PVH loader (kvmlite's, QEMU's).
``"flat"``
    the same image as a raw binary to be copied to ``FLAT_LOAD_ADDRESS``; its first byte
    is the 32-bit entry point. ``enter_flat()`` sets a vCPU up to start there.

Guests are integer-only (no x87/SSE/AVX/XSAVE), because this project's development KVM
emulates guest kernel code instruction by instruction (TEST-HOST.md).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kvmlite.errors import ImageError

if TYPE_CHECKING:
    from kvmlite.kvm.vcpu import Vcpu

#: kvmlite's own guest sources (tests/guests in the source tree).
GUEST_DIR = Path(__file__).resolve().parents[2] / "tests" / "guests"
#: Where the flat binary must be loaded, and its entry point.
FLAT_LOAD_ADDRESS = 0x100000
#: kvmlite's debug-exit convention: a 1-byte write of the exit code to this port.
DEBUG_EXIT_PORT = 0x501
COM1 = 0x3F8
#: QEMU's qboot firmware (Debian qemu-system-data): a short boot that leaves PCI BARs
#: above 4 GiB unassigned.
QBOOT = Path("/usr/share/qemu/qboot.rom")

CFLAGS = [
    "-O2",
    "-std=gnu11",
    "-Wall",
    "-Werror",
    "-ffreestanding",
    "-fno-pic",
    "-fno-pie",
    "-mno-sse",
    "-mno-mmx",
    "-mno-80387",
    "-mgeneral-regs-only",
    "-mno-red-zone",
    "-mcmodel=small",
    "-fno-stack-protector",
    "-fcf-protection=none",
    "-fno-asynchronous-unwind-tables",
    "-nostdlib",
    "-nostdinc",
]
LDFLAGS = [
    "-nostdlib",
    "-static",
    "--build-id=none",
    "-z",
    "max-page-size=4096",
    "-z",
    "noexecstack",
]

Kind = Literal["flat", "pvh"]


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise ImageError(f"{cmd[0]} not found: install gcc and binutils to build {what}") from e
    if proc.returncode:
        raise ImageError(f"building {what} failed:\n$ {' '.join(cmd)}\n{proc.stderr}")


def build_guest(source: Path, out_dir: Path, *, kind: Kind, kit_dir: Path | None = None) -> Path:
    """Build ``source`` with the kit's startup; returns ``out_dir/<name>.elf|.bin``.

    The kit (start.S, lib.c, lib.h, guest.ld) is taken from ``kit_dir``, by
    default the source's own directory.
    """
    if kind not in ("flat", "pvh"):
        raise ValueError(f"kind must be 'flat' or 'pvh', not {kind!r}")
    source = Path(source)
    if not source.is_file():
        raise ImageError(f"guest source {source} does not exist")
    src_dir = Path(kit_dir) if kit_dir is not None else source.parent
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = source.stem
    objs = []
    for src in (src_dir / "start.S", src_dir / "lib.c", source):  # source last: main
        obj = out_dir / f"{name}.{src.stem}.o"
        _run(["gcc", *CFLAGS, f"-I{src_dir}", "-c", str(src), "-o", str(obj)], src.name)
        objs.append(str(obj))
    elf = out_dir / f"{name}.elf"
    _run(["ld", *LDFLAGS, "-T", str(src_dir / "guest.ld"), "-o", str(elf), *objs], elf.name)
    if kind == "pvh":
        return elf
    flat = out_dir / f"{name}.bin"
    _run(["objcopy", "-O", "binary", str(elf), str(flat)], flat.name)
    return flat


def enter_flat(
    vcpu: Vcpu, entry: int = FLAT_LOAD_ADDRESS, start_info: int = 0, *, set_cpuid: bool = True
) -> None:
    """Set ``vcpu`` to the PVH entry state at ``entry``: 32-bit protected mode, paging off,
    flat 4 GiB segments (CS 0x18 read/execute, others 0x10 read/write), EBX = start_info.

    With ``set_cpuid`` (before the first run) it also gives the vCPU the host's supported
    CPUID: without a CPUID that shows long mode, KVM refuses the guest's EFER.LME write
    with #GP and the startup triple-faults.
    """
    if set_cpuid:
        vcpu.set_cpuid2(vcpu.vm.kvm.supported_cpuid())
    sregs = vcpu.get_sregs()
    for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss, sregs.cs):
        seg.base, seg.limit, seg.g, seg.db, seg.s, seg.present, seg.dpl, seg.l = (
            0,
            0xFFFFFFFF,
            1,
            1,
            1,
            1,
            0,
            0,
        )
        seg.selector, seg.type = 0x10, 0x3  # read/write data, accessed
    sregs.cs.selector, sregs.cs.type = 0x18, 0xB  # execute/read code, accessed
    sregs.cr0 = (sregs.cr0 | 0x1) & ~0x80000000  # PE on, PG off
    sregs.cr4 = 0
    sregs.efer = 0
    vcpu.set_sregs(sregs)
    regs = vcpu.get_regs()
    for name in ("rax", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp"):
        setattr(regs, name, 0)
    regs.rbx = start_info
    regs.rip = entry
    regs.rflags = 0x2
    vcpu.set_regs(regs)


def kvmlite_argv(elf: Path, *args: str | Path, memory_mb: int = 64) -> list[str]:
    """``kvmlite run`` (this interpreter's) booting the PVH guest ``elf`` with
    ``memory_mb`` MiB and ``args`` after; the console is on stdio unless ``args`` say
    otherwise (a later ``--console`` wins)."""
    return [
        sys.executable, "-m", "kvmlite.cli", "run", "--console", "stdio",
        "-k", str(elf), "-m", str(memory_mb), *map(str, args),
    ]  # fmt: skip


def qemu_argv(
    elf: Path,
    devices: Sequence[str] = (),
    *,
    qemu: str = "qemu-system-x86_64",
    accel: str = "kvm",
    machine: str = "q35",
    firmware: Path | None = None,
    memory_mb: int = 64,
    serial: str = "stdio",
    append: str | None = None,
) -> list[str]:
    """QEMU booting the PVH guest ``elf`` through its own PVH loader, with ``devices``
    and an ``isa-debug-exit`` at DEBUG_EXIT_PORT, so a guest's exit code ``c`` makes QEMU
    exit with ``(c << 1) | 1``. ``firmware=None`` is the machine's default (SeaBIOS)."""
    return [
        qemu, "-accel", accel, "-M", machine,
        *(["-bios", str(firmware)] if firmware is not None else []),
        "-m", str(memory_mb), "-nodefaults", "-no-user-config", "-display", "none",
        "-no-reboot", "-serial", serial,
        "-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=1",
        *devices,
        "-kernel", str(elf),
        *(["-append", append] if append is not None else []),
    ]  # fmt: skip

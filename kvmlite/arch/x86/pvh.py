"""Boot an ELF vmlinux through its PVH entry point.

Follows xen/include/public/arch-x86/hvm/start_info.h (struct hvm_start_info
version 1, hvm_modlist_entry, hvm_memmap_table_entry) and xen/include/public/
elfnote.h (XEN_ELFNOTE_PHYS32_ENTRY = 18, a note named "Xen" whose desc is
the 32-bit physical entry; Linux emits it as a pointer-sized value).

Entry state (start_info.h "x86 PVH"): 32-bit protected mode, paging off,
flat 4 GiB CS (read/execute) and DS/ES/SS (read/write), EBX = the physical
address of hvm_start_info; see ``cpu.plan_protected32``.
"""

from __future__ import annotations

import ctypes

from kvmlite.arch.x86 import layout
from kvmlite.arch.x86.bootplan import BootPlan, place_initrd, write_cmdline
from kvmlite.arch.x86.cpu import write_boot_structures
from kvmlite.arch.x86.elf import ElfImage, load_segments, parse_elf
from kvmlite.errors import ImageError
from kvmlite.memory import GuestMemory

XEN_ELFNOTE_PHYS32_ENTRY = 18
XEN_HVM_START_MAGIC_VALUE = 0x336EC578
HVM_START_INFO_VERSION = 1
#: Linux's COMMAND_LINE_SIZE on x86; the PVH path has no header to ask.
PVH_CMDLINE_MAX = 2047

u32, u64 = ctypes.c_uint32, ctypes.c_uint64


class HvmStartInfo(ctypes.LittleEndianStructure):
    _fields_ = [
        ("magic", u32),
        ("version", u32),
        ("flags", u32),
        ("nr_modules", u32),
        ("modlist_paddr", u64),
        ("cmdline_paddr", u64),
        ("rsdp_paddr", u64),
        ("memmap_paddr", u64),
        ("memmap_entries", u32),
        ("reserved", u32),
    ]


class HvmModlistEntry(ctypes.LittleEndianStructure):
    _fields_ = [("paddr", u64), ("size", u64), ("cmdline_paddr", u64), ("reserved", u64)]


class HvmMemmapTableEntry(ctypes.LittleEndianStructure):
    _fields_ = [("addr", u64), ("size", u64), ("type", u32), ("reserved", u32)]


START_INFO_ADDR = layout.ZERO_PAGE_ADDR
MODLIST_ADDR = START_INFO_ADDR + 64
MEMMAP_MAX = 0x1000 // ctypes.sizeof(HvmMemmapTableEntry)


def find_pvh_entry(image: ElfImage, name: str = "kernel") -> int:
    """The PVH entry address from the "Xen" PHYS32_ENTRY note, or ImageError."""
    for note in image.notes:
        if note.name == b"Xen" and note.type == XEN_ELFNOTE_PHYS32_ENTRY:
            if len(note.desc) not in (4, 8):
                raise ImageError(f"{name}: the PVH entry note has a {len(note.desc)}-byte value")
            entry = int.from_bytes(note.desc, "little")
            if not any(s.paddr <= entry < s.paddr + s.memsz for s in image.segments):
                raise ImageError(f"{name}: the PVH entry {entry:#x} is outside the loaded kernel")
            return entry
    raise ImageError(
        f"this vmlinux ({name}) has no PVH entry: build with CONFIG_PVH=y or use the bzImage"
    )


def load_pvh(
    memory: GuestMemory,
    data: bytes | memoryview,
    cmdline: str | bytes,
    initrd: bytes | None = None,
    *,
    rsdp_addr: int = 0,
    name: str = "kernel",
) -> BootPlan:
    """Load a PVH-capable ELF kernel, its command line, initrd and hvm_start_info."""
    image = parse_elf(data, memory, name)
    entry = find_pvh_entry(image, name)
    cmdline_size = write_cmdline(memory, cmdline, PVH_CMDLINE_MAX)
    initrd_addr = 0
    if initrd:
        initrd_addr = place_initrd(memory, initrd, image.end, layout.low_ram_top(memory))
    load_segments(memory, data, image)

    info = HvmStartInfo(
        magic=XEN_HVM_START_MAGIC_VALUE,
        version=HVM_START_INFO_VERSION,
        cmdline_paddr=layout.CMDLINE_ADDR,
        rsdp_paddr=rsdp_addr,
    )
    if initrd:
        module = HvmModlistEntry(paddr=initrd_addr, size=len(initrd))
        memory.write(MODLIST_ADDR, bytes(module))
        info.nr_modules = 1
        info.modlist_paddr = MODLIST_ADDR
    e820 = layout.e820_map(memory)[:MEMMAP_MAX]
    table = b"".join(bytes(HvmMemmapTableEntry(e.addr, e.size, e.type, 0)) for e in e820)
    memory.write(layout.PVH_MEMMAP_ADDR, table)
    info.memmap_paddr = layout.PVH_MEMMAP_ADDR
    info.memmap_entries = len(e820)
    memory.write(START_INFO_ADDR, bytes(info))
    write_boot_structures(memory, "pvh32")
    return BootPlan(
        mode="pvh32",
        entry=entry,
        boot_info=START_INFO_ADDR,
        kernel_addr=image.segments[0].paddr,
        kernel_end=image.end,
        cmdline_addr=layout.CMDLINE_ADDR,
        cmdline_size=cmdline_size,
        initrd_addr=initrd_addr,
        initrd_size=len(initrd) if initrd else 0,
        rsdp_addr=rsdp_addr,
    )


__all__ = ["HvmMemmapTableEntry", "HvmModlistEntry", "HvmStartInfo", "find_pvh_entry", "load_pvh"]

"""Boot a Multiboot (version 1) kernel: kvm-unit-tests' ``x86/*.flat``, hobby kernels.

Follows the Multiboot Specification 0.6.96:

- §3.1.1 "The layout of Multiboot header": a header of magic 0x1BADB002,
  flags and checksum (the three sum to zero mod 2^32), 4-byte aligned,
  wholly inside the first 8192 bytes of the file.
- §3.1.2 "The magic fields of Multiboot header": flag bits 0-15 are
  requirements (bit 0 page-align modules, bit 1 memory information, bit 2
  video mode); a loader that does not understand one of them must refuse
  the kernel. Bit 16 says the address fields (§3.1.3) are valid.
- §3.1.3 "The address fields of Multiboot header" (the a.out kludge):
  header_addr, load_addr, load_end_addr (0: to the end of the file),
  bss_end_addr (0: no bss), entry_addr. Without bit 16 the file must be an
  ELF executable, loaded by its program headers (``elf.parse_elf``).
- §3.2 "Machine state": EAX = 0x2BADB002, EBX = the physical address of
  the Multiboot information; 32-bit protected mode, paging off, flat 4 GiB
  CS (execute/read) and DS/ES/FS/GS/SS (read/write), IF clear; see
  ``cpu.plan_multiboot32``.
- §3.3 "Boot information format": flags, mem_lower/mem_upper (KiB below
  640 KiB and above 1 MiB), cmdline, mods_count/mods_addr (16-byte module
  entries: mod_start, mod_end, string, reserved), mmap_length/mmap_addr
  (entries of size, base_addr, length, type; ``size`` excludes itself),
  boot_loader_name.

Where things go (layout.py's map below 1 MiB): the GDT in the first page; the
information structure, the module list, the boot loader's name, the
memory map and the BIOS-state trampoline (biosstate.py: the PICs, PIT and
real-mode vectors a BIOS leaves, then a jump to the kernel's entry) in the
page at ``layout.ZERO_PAGE_ADDR``; the real-mode IVT at 0; the command line and
module strings at ``layout.CMDLINE_ADDR``. A kernel may load anywhere in low
RAM that overlaps none of these nor the firmware tables from the EBDA up to
1 MiB (kvm-unit-tests' realmode.flat loads at 0x8000). Modules follow the
kernel (and 1 MiB), each page-aligned, as QEMU places them. Like GRUB and
QEMU, the command line the kernel sees starts with the kernel's file name
(kvm-unit-tests takes it as argv[0]).

Theory of operation: ``load_multiboot`` validates everything (header, every
segment against guest RAM, the modules' room, the strings' size) and only
then writes guest memory, so a bad kernel leaves memory untouched. The only
exception out of the parser, whatever the bytes, is ImageError (fuzzed in
tests/arch/x86/test_multiboot.py).
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from kvmlite.arch.x86 import biosstate, elf, layout
from kvmlite.arch.x86.bootplan import BootPlan
from kvmlite.arch.x86.cpu import MULTIBOOT_BOOTLOADER_MAGIC, write_boot_structures
from kvmlite.errors import ImageError
from kvmlite.memory import MIB, PAGE_SIZE, GuestMemory

MULTIBOOT_HEADER_MAGIC = 0x1BADB002
#: §3.1.1: the header lies wholly within the first 8192 bytes.
MULTIBOOT_SEARCH = 8192
MULTIBOOT_HEADER_ALIGN = 4

# Header flags (§3.1.2).
MULTIBOOT_PAGE_ALIGN = 1 << 0
MULTIBOOT_MEMORY_INFO = 1 << 1
MULTIBOOT_VIDEO_MODE = 1 << 2
MULTIBOOT_AOUT_KLUDGE = 1 << 16
#: The requirement bits this loader meets. Video mode (bit 2) is accepted and
#: declined: the information carries no VBE/framebuffer flag, which tells the
#: kernel it got no graphics mode (§3.3 flags bits 11 and 12).
SUPPORTED_REQUIRED = MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO | MULTIBOOT_VIDEO_MODE

# Information flags (§3.3).
MULTIBOOT_INFO_MEMORY = 1 << 0
MULTIBOOT_INFO_CMDLINE = 1 << 2
MULTIBOOT_INFO_MODS = 1 << 3
MULTIBOOT_INFO_MEM_MAP = 1 << 6
MULTIBOOT_INFO_BOOT_LOADER_NAME = 1 << 9

#: More modules than this is a mistake on the command line, not a real need.
MAX_MODULES = 64
BOOT_LOADER_NAME = b"kvmlite\0"

_HEADER = struct.Struct("<III")  # magic, flags, checksum
_ADDRESSES = struct.Struct("<IIIII")  # header, load, load_end, bss_end, entry

u32, u64 = ctypes.c_uint32, ctypes.c_uint64


class MultibootInfo(ctypes.LittleEndianStructure):
    """§3.3 "Boot information format", up to the framebuffer fields."""

    _fields_ = [
        ("flags", u32),
        ("mem_lower", u32),
        ("mem_upper", u32),
        ("boot_device", u32),
        ("cmdline", u32),
        ("mods_count", u32),
        ("mods_addr", u32),
        ("syms", u32 * 4),
        ("mmap_length", u32),
        ("mmap_addr", u32),
        ("drives_length", u32),
        ("drives_addr", u32),
        ("config_table", u32),
        ("boot_loader_name", u32),
        ("apm_table", u32),
        ("vbe", u32 * 4),  # vbe_control_info .. vbe_interface_len
    ]


class MultibootModule(ctypes.LittleEndianStructure):
    _fields_ = [("mod_start", u32), ("mod_end", u32), ("string", u32), ("reserved", u32)]


class MultibootMmapEntry(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [("size", u32), ("base_addr", u64), ("length", u64), ("type", u32)]


#: Everything the loader writes besides the command line lives in this one page,
#: so a kernel may load anywhere else in RAM, even below 1 MiB (kvm-unit-tests'
#: realmode.flat loads at 0x8000).
INFO_ADDR = layout.ZERO_PAGE_ADDR
INFO_PAGE_END = INFO_ADDR + PAGE_SIZE
MODS_ADDR = INFO_ADDR + 0x100
LOADER_NAME_ADDR = MODS_ADDR + MAX_MODULES * ctypes.sizeof(MultibootModule)
MMAP_ADDR = LOADER_NAME_ADDR + 0x100
MMAP_MAX = (biosstate.TRAMPOLINE_ADDR - MMAP_ADDR) // ctypes.sizeof(MultibootMmapEntry)
#: The lowest page (real-mode IVT, BDA and the boot GDT at 0x500) stays the loader's.
LOW_RESERVED_END = PAGE_SIZE


@dataclass(frozen=True)
class MultibootHeader:
    """A checked header; the address fields are zero unless the a.out kludge is used."""

    offset: int  # of the magic in the file
    flags: int
    header_addr: int = 0
    load_addr: int = 0
    load_end_addr: int = 0
    bss_end_addr: int = 0
    entry_addr: int = 0

    @property
    def aout_kludge(self) -> bool:
        return bool(self.flags & MULTIBOOT_AOUT_KLUDGE)


def _magic_offsets(data: bytes | memoryview) -> list[int]:
    head = bytes(data[:MULTIBOOT_SEARCH])
    magic = struct.pack("<I", MULTIBOOT_HEADER_MAGIC)
    found = []
    pos = head.find(magic)
    while pos >= 0:
        if pos % MULTIBOOT_HEADER_ALIGN == 0:
            found.append(pos)
        pos = head.find(magic, pos + 1)
    return found


def is_multiboot(data: bytes | memoryview) -> bool:
    """Whether the file carries the Multiboot magic where §3.1.1 puts a header."""
    return bool(_magic_offsets(data))


def parse_header(data: bytes | memoryview, name: str = "kernel") -> MultibootHeader:
    """The first header whose checksum holds, validated; ImageError otherwise."""
    offsets = _magic_offsets(data)
    if not offsets:
        raise ImageError(
            f"{name} has no Multiboot header (magic {MULTIBOOT_HEADER_MAGIC:#x}, 4-byte aligned,"
            f" in the first {MULTIBOOT_SEARCH} bytes)"
        )
    for off in offsets:
        if off + _HEADER.size > min(len(data), MULTIBOOT_SEARCH):
            continue
        magic, flags, checksum = _HEADER.unpack_from(data, off)
        if (magic + flags + checksum) & 0xFFFFFFFF == 0:
            break
    else:
        raise ImageError(
            f"{name}: the Multiboot header at {offsets[0]:#x} has a wrong checksum"
            " (magic + flags + checksum must be 0 mod 2^32); the file is corrupt"
        )
    unknown = flags & 0xFFFF & ~SUPPORTED_REQUIRED
    if unknown:
        raise ImageError(
            f"{name}: the Multiboot header requires features {unknown:#x} (flag bits 0-15)"
            " that kvmlite does not provide"
        )
    if not flags & MULTIBOOT_AOUT_KLUDGE:
        return MultibootHeader(off, flags)
    end = off + _HEADER.size + _ADDRESSES.size
    if end > min(len(data), MULTIBOOT_SEARCH):
        raise ImageError(
            f"{name}: the Multiboot header's address fields (flag 16) run past"
            f" {'the end of the file' if end > len(data) else 'the first 8192 bytes'}"
        )
    return MultibootHeader(off, flags, *_ADDRESSES.unpack_from(data, off + _HEADER.size))


def _aout_segments(
    data: bytes | memoryview, h: MultibootHeader, memory: GuestMemory, name: str
) -> tuple[list[elf.LoadSegment], int]:
    """The one segment the address fields describe (§3.1.3), checked; and the entry."""
    if h.header_addr < h.load_addr:
        raise ImageError(f"{name}: Multiboot header_addr {h.header_addr:#x} is below load_addr")
    file_offset = h.offset - (h.header_addr - h.load_addr)
    if file_offset < 0:
        raise ImageError(f"{name}: Multiboot load_addr lies before the start of the file")
    load_end = h.load_end_addr or h.load_addr + (len(data) - file_offset)
    if load_end <= h.load_addr:
        raise ImageError(f"{name}: Multiboot load_end_addr {load_end:#x} is not above load_addr")
    filesz = load_end - h.load_addr
    if file_offset + filesz > len(data):
        raise ImageError(
            f"{name}: the file is shorter than Multiboot load_end_addr says (truncated?)"
        )
    bss_end = h.bss_end_addr or load_end
    if bss_end < load_end:
        raise ImageError(f"{name}: Multiboot bss_end_addr {bss_end:#x} is below load_end_addr")
    if not h.load_addr <= h.entry_addr < bss_end:
        raise ImageError(f"{name}: the Multiboot entry {h.entry_addr:#x} is outside the kernel")
    return [elf.LoadSegment(h.load_addr, file_offset, filesz, bss_end - h.load_addr)], h.entry_addr


def _check_placement(
    start: int, end: int, memory: GuestMemory, name: str, strings_size: int
) -> None:
    """[start, end) must be in low RAM and clear of everything the loader writes."""
    top = layout.low_ram_top(memory)
    if end > top:
        raise ImageError(
            f"{name}: the kernel ({start:#x}..{end:#x}) does not fit in the guest's"
            f" {top >> 20} MiB of low memory: give the guest more memory"
        )
    reserved = [
        (0, LOW_RESERVED_END, "the boot GDT"),
        (INFO_ADDR, INFO_PAGE_END, "the Multiboot information"),
        (layout.CMDLINE_ADDR, layout.CMDLINE_ADDR + strings_size, "the command line"),
        (layout.EBDA_START, layout.BIOS_RESERVED_END, "the firmware tables"),
    ]
    for lo, hi, what in reserved:
        if start < hi and lo < end:
            raise ImageError(
                f"{name}: the kernel ({start:#x}..{end:#x}) would overwrite {what}"
                f" at {lo:#x}..{hi:#x}: link it at 1 MiB or above"
            )


def _elf_segments(
    data: bytes | memoryview, memory: GuestMemory, name: str
) -> tuple[list[elf.LoadSegment], int]:
    if not elf.is_elf(data):
        raise ImageError(
            f"{name}: a Multiboot kernel without the address fields (flag 16) must be an ELF file"
        )
    image = elf.parse_elf(data, memory, name, min_addr=0)
    if not any(s.paddr <= image.entry < s.paddr + s.memsz for s in image.segments):
        raise ImageError(f"{name}: the ELF entry {image.entry:#x} is outside the loaded kernel")
    return image.segments, image.entry


def _mmap_bytes(memory: GuestMemory) -> bytes:
    entry_size = ctypes.sizeof(MultibootMmapEntry) - 4
    entries = layout.e820_map(memory)[:MMAP_MAX]
    return b"".join(bytes(MultibootMmapEntry(entry_size, e.addr, e.size, e.type)) for e in entries)


def load_multiboot(
    memory: GuestMemory,
    data: bytes | memoryview,
    cmdline: str | bytes,
    modules: Sequence[tuple[bytes, str]] = (),
    *,
    rsdp_addr: int = 0,
    name: str = "kernel",
) -> BootPlan:
    """Load a Multiboot kernel and its ``modules`` ((contents, string) pairs).

    Everything is checked before guest memory is written (see the module docs).
    """
    data = memoryview(data)
    header = parse_header(data, name)
    line = cmdline.encode() if isinstance(cmdline, str) else bytes(cmdline)
    line = (name.encode() + b" " + line).rstrip(b" ")
    strings = [line, *(s.encode() for _, s in modules)]
    if any(b"\0" in s for s in strings):
        raise ImageError("the Multiboot command line and module names must not contain NUL bytes")
    blob = b"".join(s + b"\0" for s in strings)
    if len(blob) > layout.CMDLINE_MAX:
        raise ImageError(
            f"the Multiboot command line and module names take {len(blob)} bytes;"
            f" at most {layout.CMDLINE_MAX}: shorten them"
        )
    if header.aout_kludge:
        segments, entry = _aout_segments(data, header, memory, name)
    else:
        segments, entry = _elf_segments(data, memory, name)
    for seg in segments:
        _check_placement(seg.paddr, seg.paddr + seg.memsz, memory, name, len(blob))
    kernel_start = min(s.paddr for s in segments)
    kernel_end = max(s.paddr + s.memsz for s in segments)

    if len(modules) > MAX_MODULES:
        raise ImageError(f"{len(modules)} Multiboot modules: kvmlite passes at most {MAX_MODULES}")
    top = layout.low_ram_top(memory)
    placed: list[tuple[int, bytes]] = []
    addr = max(kernel_end, layout.KERNEL_LOAD_ADDR)  # clear of the loader's data
    for contents, _string in modules:
        addr = (addr + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        if addr + len(contents) > top:
            raise ImageError(
                f"Multiboot module of {len(contents) >> 10} KiB does not fit between the kernel"
                f" and {top:#x}: give the guest more memory"
            )
        placed.append((addr, contents))
        addr += len(contents)

    # -- everything checked; now write guest memory --------------------------------------
    for s in segments:
        memory.write(s.paddr, data[s.offset : s.offset + s.filesz])
        if s.memsz > s.filesz:
            memory.fill(s.paddr + s.filesz, s.memsz - s.filesz)
    memory.write(layout.CMDLINE_ADDR, blob)
    string_addrs = []
    pos = layout.CMDLINE_ADDR
    for text in strings:
        string_addrs.append(pos)
        pos += len(text) + 1
    mod_table = b"".join(
        bytes(MultibootModule(a, a + len(c), string_addrs[1 + i], 0))
        for i, (a, c) in enumerate(placed)
    )
    for a, c in placed:
        memory.write(a, c)
    mmap = _mmap_bytes(memory)
    memory.write(MMAP_ADDR, mmap)
    memory.write(LOADER_NAME_ADDR, BOOT_LOADER_NAME)
    info = MultibootInfo(
        flags=MULTIBOOT_INFO_MEMORY
        | MULTIBOOT_INFO_CMDLINE
        | MULTIBOOT_INFO_MEM_MAP
        | MULTIBOOT_INFO_BOOT_LOADER_NAME,
        mem_lower=layout.EBDA_START >> 10,
        mem_upper=(top - MIB) >> 10,
        cmdline=layout.CMDLINE_ADDR,
        mmap_length=len(mmap),
        mmap_addr=MMAP_ADDR,
        boot_loader_name=LOADER_NAME_ADDR,
    )
    if placed:
        memory.write(MODS_ADDR, mod_table)
        info.flags |= MULTIBOOT_INFO_MODS
        info.mods_count = len(placed)
        info.mods_addr = MODS_ADDR
    memory.write(INFO_ADDR, bytes(info))
    write_boot_structures(memory, "multiboot32")
    memory.write(biosstate.IVT_ADDR, biosstate.ivt_bytes())
    memory.write(biosstate.STUBS_ADDR, biosstate.stubs_bytes())
    tramp = biosstate.trampoline_bytes(entry, MULTIBOOT_BOOTLOADER_MAGIC, INFO_ADDR)
    memory.write(biosstate.TRAMPOLINE_ADDR, tramp)
    return BootPlan(
        mode="multiboot32",
        entry=biosstate.TRAMPOLINE_ADDR,  # BIOS-like PIC/PIT set-up, then the kernel's entry
        boot_info=INFO_ADDR,
        kernel_addr=kernel_start,
        kernel_end=kernel_end,
        cmdline_addr=layout.CMDLINE_ADDR,
        cmdline_size=len(line) + 1,
        initrd_addr=placed[0][0] if placed else 0,
        initrd_size=len(placed[0][1]) if placed else 0,
        rsdp_addr=rsdp_addr,
    )


__all__ = [
    "MULTIBOOT_BOOTLOADER_MAGIC",
    "MULTIBOOT_HEADER_MAGIC",
    "MultibootHeader",
    "MultibootInfo",
    "MultibootMmapEntry",
    "MultibootModule",
    "is_multiboot",
    "load_multiboot",
    "parse_header",
]

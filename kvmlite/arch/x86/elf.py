"""Parse an ELF vmlinux (ELF32/ELF64, i386/x86-64) for loading by physical address.

Follows the System V ABI "gABI" chapters "ELF Header", "Program Header"
(PT_LOAD loaded at p_paddr, p_memsz - p_filesz zero-filled) and "Note
Section" (namesz, descsz, type, then name and desc each padded to 4 bytes).

Every field is hostile input: offsets and sizes are checked against the file,
segments against guest RAM (they must lie wholly in low RAM, above the boot
data below 1 MiB, and not overlap each other), and counts against sane
limits. Whatever the bytes, the only exception out of here is ImageError
(fuzzed in tests/arch/x86/test_elf.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kvmlite.arch.x86 import layout
from kvmlite.errors import ImageError
from kvmlite.memory import GuestMemory

ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB = 1
EM_386 = 3
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
MAX_PHDRS = 256
MAX_NOTES = 1024

_EHDR64 = struct.Struct("<16sHHIQQQIHHHHHH")
_EHDR32 = struct.Struct("<16sHHIIIIIHHHHHH")
_PHDR64 = struct.Struct("<IIQQQQQQ")  # type flags offset vaddr paddr filesz memsz align
_PHDR32 = struct.Struct("<IIIIIIII")  # type offset vaddr paddr filesz memsz flags align
_NHDR = struct.Struct("<III")


@dataclass(frozen=True)
class LoadSegment:
    paddr: int
    offset: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class ElfNote:
    name: bytes
    type: int
    desc: bytes


@dataclass(frozen=True)
class ElfImage:
    elf64: bool
    entry: int
    segments: list[LoadSegment]
    notes: list[ElfNote]

    @property
    def end(self) -> int:
        """First byte after the highest loaded segment."""
        return max(s.paddr + s.memsz for s in self.segments)


def is_elf(data: bytes | memoryview) -> bool:
    return bytes(data[:4]) == ELF_MAGIC


def _parse_notes(blob: memoryview, name: str) -> list[ElfNote]:
    notes: list[ElfNote] = []
    pos = 0
    while pos + _NHDR.size <= len(blob):
        if len(notes) >= MAX_NOTES:
            raise ImageError(f"{name}: more than {MAX_NOTES} ELF notes; the file is corrupt")
        namesz, descsz, ntype = _NHDR.unpack_from(blob, pos)
        pos += _NHDR.size
        name_end = pos + namesz
        desc_start = name_end + (-namesz % 4)
        desc_end = desc_start + descsz
        if desc_end > len(blob):
            raise ImageError(f"{name}: an ELF note runs past the end of its segment")
        note_name = bytes(blob[pos:name_end]).rstrip(b"\0")
        notes.append(ElfNote(note_name, ntype, bytes(blob[desc_start:desc_end])))
        pos = desc_end + (-descsz % 4)
    return notes


def parse_elf(
    data: bytes | memoryview,
    memory: GuestMemory,
    name: str = "kernel",
    *,
    min_addr: int = layout.KERNEL_LOAD_ADDR,
) -> ElfImage:
    """Validate an executable's headers and segments against the file and ``memory``.

    Segments must lie at or above ``min_addr`` (1 MiB: the boot data is below);
    a loader that keeps its own data elsewhere checks the overlap itself.
    """
    data = memoryview(data)
    if len(data) < 16 or not is_elf(data):
        raise ImageError(f"{name} is not an ELF file (no \\x7fELF magic)")
    cls, encoding = data[4], data[5]
    if cls not in (ELFCLASS32, ELFCLASS64) or encoding != ELFDATA2LSB:
        raise ImageError(f"{name} is not a little-endian ELF32/ELF64 file")
    elf64 = cls == ELFCLASS64
    ehdr, phdr = (_EHDR64, _PHDR64) if elf64 else (_EHDR32, _PHDR32)
    if len(data) < ehdr.size:
        raise ImageError(f"{name}: the ELF header is truncated")
    _, _, machine, _, entry, phoff, _, _, _, phentsize, phnum, _, _, _ = ehdr.unpack_from(data)
    if machine not in (EM_386, EM_X86_64):
        raise ImageError(f"{name} is an ELF file for machine {machine}, not x86 (3 or 62)")
    if phnum == 0 or phnum > MAX_PHDRS or phentsize != phdr.size:
        raise ImageError(
            f"{name}: ELF program header table is malformed ({phnum} entries of {phentsize} bytes)"
        )
    if phoff + phnum * phentsize > len(data):
        raise ImageError(f"{name}: the ELF program headers lie outside the file")

    low_top = layout.low_ram_top(memory)
    segments: list[LoadSegment] = []
    notes: list[ElfNote] = []
    for i in range(phnum):
        fields = phdr.unpack_from(data, phoff + i * phentsize)
        if elf64:
            ptype, _flags, offset, _vaddr, paddr, filesz, memsz, _align = fields
        else:
            ptype, offset, _vaddr, paddr, filesz, memsz, _flags, _align = fields
        if ptype not in (PT_LOAD, PT_NOTE):
            continue
        if offset + filesz > len(data):
            raise ImageError(f"{name}: ELF segment {i} lies outside the file (truncated?)")
        if ptype == PT_NOTE:
            notes += _parse_notes(data[offset : offset + filesz], name)
            continue
        if memsz == 0:
            continue
        if filesz > memsz:
            raise ImageError(f"{name}: ELF segment {i} has p_filesz > p_memsz")
        if paddr < min_addr:
            raise ImageError(
                f"{name}: ELF segment {i} at {paddr:#x} would overwrite the boot data below 1 MiB"
            )
        if paddr + memsz > low_top:
            raise ImageError(
                f"{name}: ELF segment {i} ({paddr:#x}..{paddr + memsz:#x}) does not fit in"
                f" the guest's {low_top >> 20} MiB of low memory: give the guest more memory"
            )
        segments.append(LoadSegment(paddr, offset, filesz, memsz))
    if not segments:
        raise ImageError(f"{name}: the ELF file has no loadable segment")
    ordered = sorted(segments, key=lambda s: s.paddr)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.paddr + a.memsz > b.paddr:
            raise ImageError(f"{name}: ELF segments overlap at {b.paddr:#x}")
    return ElfImage(elf64, entry, ordered, notes)


def load_segments(memory: GuestMemory, data: bytes | memoryview, image: ElfImage) -> None:
    """Copy each PT_LOAD to its p_paddr and zero its tail (the .bss)."""
    data = memoryview(data)
    for s in image.segments:
        memory.write(s.paddr, data[s.offset : s.offset + s.filesz])
        if s.memsz > s.filesz:
            memory.fill(s.paddr + s.filesz, s.memsz - s.filesz)

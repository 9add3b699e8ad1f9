"""Boot-time CPU state: GDT, identity page tables and control registers.

Follows Documentation/x86/boot.rst ("64-bit Boot Protocol": long mode,
paging on with an identity map covering the loaded kernel, zero page and
command line, ``__BOOT_CS`` = 0x10 and ``__BOOT_DS`` = 0x18 flat, RSI =
zero page), the PVH boot ABI (xen/include/public/arch-x86/hvm/start_info.h:
32-bit protected mode, paging off, flat CS/DS/ES/SS, EBX = hvm_start_info) and
Multiboot 0.6.96 §3.2 (the same, plus EAX = 0x2BADB002, EBX = the info).
Descriptor layout: Intel SDM Vol. 3A §3.4.5; paging: §4.5 (4-level, 2 MiB
pages, so CPUs without ``pdpe1gb`` work).

Theory of operation: ``plan_long_mode``/``plan_protected32`` are pure and
return a ``CpuState``; ``write_boot_structures`` puts the GDT (and page
tables) in guest RAM; ``apply_boot_state`` is the only part that touches a
vCPU. Only the bootstrap processor gets this state: KVM's in-kernel LAPIC
keeps the application processors waiting for INIT/SIPI, so the VMM leaves
their mp_state at the reset default and only the BSP is RUNNABLE.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Any

from kvmlite.arch.x86 import layout
from kvmlite.memory import GuestMemory

# CR0 / CR4 / EFER bits (SDM Vol. 3A §2.5, §2.2.1).
CR0_PE = 1 << 0
CR0_ET = 1 << 4
CR0_NE = 1 << 5
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
RFLAGS_RESERVED = 1 << 1  # bit 1 always reads as 1

# Page-table entry bits (SDM Vol. 3A §4.5, Table 4-15..4-18).
PTE_PRESENT = 1 << 0
PTE_WRITE = 1 << 1
PTE_PS = 1 << 7  # 2 MiB page in a page-directory entry

# GDT selectors (boot.rst: __BOOT_CS 0x10, __BOOT_DS 0x18).
SEL_CODE32 = 0x08
SEL_CODE64 = 0x10
SEL_DATA = 0x18
GDT_ENTRIES = 4

# KVM mp_state values (Documentation/virt/kvm/api.rst, KVM_SET_MP_STATE).
KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_UNINITIALIZED = 1

PDPT_ADDR = layout.PML4_ADDR + 0x1000
PD_ADDR = PDPT_ADDR + 0x1000
PAGE_DIRECTORIES = 4  # 4 x 512 x 2 MiB = 4 GiB
#: EAX at a Multiboot kernel's entry (Multiboot 0.6.96 §3.2).
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002


@dataclass(frozen=True)
class Segment:
    """A segment register as KVM's ``kvm_segment`` holds it (limit in bytes)."""

    selector: int
    type: int
    base: int = 0
    limit: int = 0xFFFFFFFF
    present: int = 1
    dpl: int = 0
    db: int = 0
    s: int = 1
    l: int = 0  # noqa: E741 - the field's name in kvm_segment
    g: int = 1
    avl: int = 0

    def descriptor(self) -> int:
        """The 8-byte GDT descriptor for this segment (SDM Vol. 3A Figure 3-8)."""
        limit = self.limit >> 12 if self.g else self.limit
        access = self.type | (self.s << 4) | (self.dpl << 5) | (self.present << 7)
        flags = self.avl | (self.l << 1) | (self.db << 2) | (self.g << 3)
        return (
            (limit & 0xFFFF)
            | ((self.base & 0xFFFFFF) << 16)
            | (access << 40)
            | (((limit >> 16) & 0xF) << 48)
            | (flags << 52)
            | (((self.base >> 24) & 0xFF) << 56)
        )


CODE32 = Segment(SEL_CODE32, type=0xB, db=1)  # execute/read, accessed
CODE64 = Segment(SEL_CODE64, type=0xB, l=1)
DATA = Segment(SEL_DATA, type=0x3, db=1)  # read/write, accessed


@dataclass(frozen=True)
class CpuState:
    """Everything ``apply_boot_state`` writes into the BSP."""

    mode: str  # "long64", "pvh32" or "multiboot32"
    rip: int
    cs: Segment
    data: Segment  # DS, ES, FS, GS, SS
    cr0: int
    cr3: int
    cr4: int
    efer: int
    gdt_base: int = layout.GDT_ADDR
    gdt_limit: int = GDT_ENTRIES * 8 - 1
    rflags: int = RFLAGS_RESERVED
    gprs: dict[str, int] = field(default_factory=dict)  # e.g. {"rsi": zero page}


def gdt_bytes() -> bytes:
    """The boot GDT: null, 32-bit code (0x08), 64-bit code (0x10), data (0x18)."""
    return struct.pack("<4Q", 0, CODE32.descriptor(), CODE64.descriptor(), DATA.descriptor())


def page_table_bytes() -> bytes:
    """PML4 + PDPT + 4 page directories identity-mapping 0..4 GiB with 2 MiB pages."""
    flags = PTE_PRESENT | PTE_WRITE
    pml4 = struct.pack("<Q", PDPT_ADDR | flags).ljust(4096, b"\0")
    pdpt = struct.pack(f"<{PAGE_DIRECTORIES}Q", *(PD_ADDR + i * 4096 | flags for i in range(4)))
    pdpt = pdpt.ljust(4096, b"\0")
    pds = struct.pack("<2048Q", *((i << 21) | flags | PTE_PS for i in range(2048)))
    return pml4 + pdpt + pds


def write_boot_structures(memory: GuestMemory, mode: str) -> None:
    """Write the GDT (and, for long mode, the page tables) into guest RAM."""
    memory.write(layout.GDT_ADDR, gdt_bytes())
    if mode == "long64":
        memory.write(layout.PML4_ADDR, page_table_bytes())


def plan_long_mode(entry: int, zero_page: int) -> CpuState:
    """64-bit boot protocol state: paging on, identity map, RSI = zero page."""
    return CpuState(
        mode="long64",
        rip=entry,
        cs=CODE64,
        data=DATA,
        cr0=CR0_PE | CR0_ET | CR0_NE | CR0_PG,
        cr3=layout.PML4_ADDR,
        cr4=CR4_PAE,
        efer=EFER_LME | EFER_LMA,
        gprs={"rsi": zero_page},
    )


def plan_protected32(entry: int, start_info: int) -> CpuState:
    """PVH entry state: 32-bit protected mode, paging off, EBX = hvm_start_info."""
    return CpuState(
        mode="pvh32",
        rip=entry,
        cs=CODE32,
        data=DATA,
        cr0=CR0_PE | CR0_ET,
        cr3=0,
        cr4=0,
        efer=0,
        gprs={"rbx": start_info},
    )


def plan_multiboot32(entry: int, info: int) -> CpuState:
    """Multiboot 0.6.96 §3.2 state: as PVH's, with EAX = 0x2BADB002 and EBX = the info."""
    gprs = {"rax": MULTIBOOT_BOOTLOADER_MAGIC, "rbx": info}
    return replace(plan_protected32(entry, info), mode="multiboot32", gprs=gprs)


def initial_mp_state(vcpu_index: int) -> int:
    """The BSP runs; APs wait in the reset state for INIT/SIPI from the LAPIC."""
    return KVM_MP_STATE_RUNNABLE if vcpu_index == 0 else KVM_MP_STATE_UNINITIALIZED


def _load_segment(dst: Any, seg: Segment) -> None:
    for name in ("base", "limit", "selector", "type", "present", "dpl", "db", "s", "l", "g"):
        setattr(dst, name, getattr(seg, name))
    dst.avl = seg.avl
    if hasattr(dst, "unusable"):
        dst.unusable = 0


def apply_boot_state(vcpu: Any, state: CpuState, *, regs_type: Any = None) -> None:
    """Load ``state`` into a vCPU (the BSP) through get/set_sregs and set_regs.

    The special registers are read first and only the boot-relevant fields are
    changed, so TR/LDT keep the valid reset values KVM gave them.
    ``regs_type`` defaults to ``kvmlite.kvm.structs.KvmRegs``.
    """
    if regs_type is None:
        from kvmlite.kvm.structs import KvmRegs as regs_type  # noqa: N813 - lazy import

    sregs = vcpu.get_sregs()
    _load_segment(sregs.cs, state.cs)
    for name in ("ds", "es", "fs", "gs", "ss"):
        _load_segment(getattr(sregs, name), state.data)
    sregs.gdt.base = state.gdt_base
    sregs.gdt.limit = state.gdt_limit
    sregs.idt.base = 0
    sregs.idt.limit = 0
    sregs.cr0 = state.cr0
    sregs.cr3 = state.cr3
    sregs.cr4 = state.cr4
    sregs.efer = state.efer
    vcpu.set_sregs(sregs)

    regs = regs_type()
    regs.rip = state.rip
    regs.rflags = state.rflags
    for name, value in state.gprs.items():
        setattr(regs, name, value)
    vcpu.set_regs(regs)

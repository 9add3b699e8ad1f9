"""What a kernel loader leaves behind: the ``BootPlan``, plus the placement
helpers both loaders share (command line, initrd).

Placement rules come from Documentation/x86/boot.rst ("Details of header
fields": cmdline_size, initrd_addr_max; "The initrd should typically be
located as high in memory as possible").
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmlite.arch.x86 import cpu, layout
from kvmlite.errors import ImageError
from kvmlite.memory import PAGE_SIZE, GuestMemory


@dataclass(frozen=True)
class BootPlan:
    """Where everything went, and how the BSP enters the kernel."""

    mode: str  # "long64" (bzImage 64-bit entry), "pvh32" (PVH ELF entry) or "multiboot32"
    entry: int  # RIP
    boot_info: int  # RSI (zero page) for long64, EBX (hvm_start_info / multiboot info) else
    kernel_addr: int
    kernel_end: int  # first byte after the kernel's footprint (including init_size)
    cmdline_addr: int
    cmdline_size: int  # bytes including the NUL
    initrd_addr: int = 0
    initrd_size: int = 0
    rsdp_addr: int = 0

    def cpu_state(self) -> cpu.CpuState:
        """The BSP's register plan for ``cpu.apply_boot_state``."""
        if self.mode == "long64":
            return cpu.plan_long_mode(self.entry, self.boot_info)
        if self.mode == "multiboot32":
            return cpu.plan_multiboot32(self.entry, self.boot_info)
        return cpu.plan_protected32(self.entry, self.boot_info)


def write_cmdline(memory: GuestMemory, cmdline: str | bytes, max_len: int) -> int:
    """Write the NUL-terminated command line at ``layout.CMDLINE_ADDR``; returns its size.

    ``max_len`` is the longest line the kernel accepts, without the NUL.
    """
    data = cmdline.encode() if isinstance(cmdline, str) else bytes(cmdline)
    if b"\0" in data:
        raise ImageError("the kernel command line must not contain NUL bytes")
    limit = min(max_len, layout.CMDLINE_MAX - 1)
    if len(data) > limit:
        raise ImageError(
            f"kernel command line is {len(data)} bytes; this kernel accepts at most {limit}:"
            " shorten it"
        )
    memory.write(layout.CMDLINE_ADDR, data + b"\0")
    return len(data) + 1


def place_initrd(memory: GuestMemory, initrd: bytes, lowest: int, highest_end: int) -> int:
    """Put ``initrd`` as high as possible, page-aligned, in [lowest, highest_end).

    Returns its address; raises ImageError naming the sizes when it cannot fit.
    """
    top = min(highest_end, layout.low_ram_top(memory))
    addr = (top - len(initrd)) & ~(PAGE_SIZE - 1)
    if addr < lowest or len(initrd) > top:
        room = max(0, top - lowest)
        raise ImageError(
            f"initrd of {len(initrd) >> 10} KiB does not fit: only {room >> 10} KiB are free"
            f" between the kernel and {top:#x}; give the guest more memory"
        )
    memory.write(addr, initrd)
    return addr

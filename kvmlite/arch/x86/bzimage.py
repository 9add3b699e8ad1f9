"""Load a Linux bzImage by the x86 boot protocol, 64-bit entry.

Follows Documentation/x86/boot.rst: "The Real-Mode Kernel Header" (setup
header at 0x1f1, "HdrS" at 0x202, boot_flag 0xAA55), "Details of header
fields", "Loading the rest of the kernel" (the protected-mode part starts at
(setup_sects + 1) * 512 in the file; setup_sects 0 means 4) and "64-bit Boot
Protocol" (zero page filled from the file's setup header, entry at the load
address + 0x200 in long mode, RSI = zero page).

Theory of operation: ``parse_setup_header`` validates the file and never
raises anything but ImageError, whatever the bytes (fuzzed in the tests).
``load_bzimage`` then writes the kernel, the command line, the initrd and
the zero page (with the e820 map) into guest memory and returns a BootPlan;
it checks every placement before writing the first byte of the kernel.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from kvmlite.arch.x86 import layout
from kvmlite.arch.x86.bootparams import (
    BOOT_FLAG,
    CAN_USE_HEAP,
    E820_MAX_ENTRIES_ZEROPAGE,
    HDRS_MAGIC,
    LOADED_HIGH,
    SETUP_HEADER_OFFSET,
    XLF_KERNEL_64,
    BootParams,
    SetupHeader,
)
from kvmlite.arch.x86.bootplan import BootPlan, place_initrd, write_cmdline
from kvmlite.arch.x86.cpu import write_boot_structures
from kvmlite.errors import ImageError
from kvmlite.memory import MIB, GuestMemory

MIN_VERSION = 0x0206  # cmdline_size; earlier kernels predate the 64-bit entry we use
XLOADFLAGS_VERSION = 0x020C
PREF_ADDRESS_VERSION = 0x020A  # pref_address and init_size
RSDP_VERSION = 0x020E  # acpi_rsdp_addr in the zero page
LOADER_UNDEFINED = 0xFF  # type_of_loader: "undefined" boot loader
HEAP_END = 0xDE00  # heap_end_ptr: boot.rst's 0xe000 - 0x200
ENTRY_64_OFFSET = 0x200
INITRD_ADDR_MAX_DEFAULT = 0x37FFFFFF  # boot.rst: for protocol < 2.03


@dataclass(frozen=True)
class BzImage:
    """A validated bzImage: its setup header and the protected-mode kernel's bytes."""

    header: SetupHeader
    header_bytes: bytes  # the header as found in the file, copied into the zero page
    setup_size: int
    kernel: memoryview

    @property
    def version(self) -> int:
        return self.header.version


def is_bzimage(data: bytes | memoryview) -> bool:
    """True when ``data`` carries the boot protocol's "HdrS" magic."""
    return len(data) >= 0x206 and bytes(data[0x202:0x206]) == b"HdrS"


def parse_setup_header(data: bytes | memoryview, name: str = "kernel") -> BzImage:
    """Validate a bzImage's setup header; ImageError says what is wrong."""
    data = memoryview(data)
    hdr_size = ctypes.sizeof(SetupHeader)
    if len(data) < SETUP_HEADER_OFFSET + hdr_size or not is_bzimage(data):
        raise ImageError(f"{name} is not a bzImage: no 'HdrS' boot protocol header at 0x202")
    hdr = SetupHeader.from_buffer_copy(data[SETUP_HEADER_OFFSET : SETUP_HEADER_OFFSET + hdr_size])
    if hdr.boot_flag != BOOT_FLAG or hdr.header != HDRS_MAGIC:
        raise ImageError(f"{name} is not a bzImage: boot_flag {hdr.boot_flag:#x} is not 0xaa55")
    if hdr.version < MIN_VERSION:
        raise ImageError(
            f"{name} uses boot protocol {hdr.version >> 8}.{hdr.version & 0xFF:02}; kvmlite"
            " needs 2.06 or newer for a 64-bit entry: use a newer kernel"
        )
    if hdr.version >= XLOADFLAGS_VERSION and not hdr.xloadflags & XLF_KERNEL_64:
        raise ImageError(f"{name} has no 64-bit entry point (XLF_KERNEL_64): build it for x86_64")
    if not hdr.loadflags & LOADED_HIGH:
        raise ImageError(f"{name} is a zImage (loaded low); kvmlite boots only bzImages")
    setup_sects = hdr.setup_sects or 4
    setup_size = (setup_sects + 1) * 512
    kernel_bytes = len(data) - setup_size
    if kernel_bytes <= 0 or hdr.syssize * 16 > kernel_bytes:
        raise ImageError(
            f"{name} is truncated: its header announces {setup_size + hdr.syssize * 16} bytes,"
            f" the file has {len(data)}"
        )
    # boot.rst: the header runs to 0x202 + the byte at 0x201 (the jump's offset).
    hdr_end = min(0x202 + data[0x201], SETUP_HEADER_OFFSET + hdr_size)
    header_bytes = bytes(data[SETUP_HEADER_OFFSET:hdr_end])
    return BzImage(hdr, header_bytes, setup_size, data[setup_size:])


def _load_address(image: BzImage, low_top: int) -> tuple[int, int]:
    """(load address, footprint) for the protected-mode kernel."""
    hdr = image.header
    footprint = len(image.kernel)
    if hdr.version >= PREF_ADDRESS_VERSION:
        footprint = max(footprint, hdr.init_size)
        pref = hdr.pref_address
        if hdr.relocatable_kernel and pref >= MIB and pref + footprint <= low_top:
            return pref, footprint
    return layout.KERNEL_LOAD_ADDR, footprint


def load_bzimage(
    memory: GuestMemory,
    data: bytes | memoryview,
    cmdline: str | bytes,
    initrd: bytes | None = None,
    *,
    rsdp_addr: int = 0,
    name: str = "kernel",
    screen_info: bytes = b"",
) -> BootPlan:
    """Place a bzImage, its command line and initrd; build the zero page.

    ``screen_info``: up to 0x40 bytes for the zero page's first field (a framebuffer).
    """
    image = parse_setup_header(data, name)
    hdr = image.header
    low_top = layout.low_ram_top(memory)
    load_addr, footprint = _load_address(image, low_top)
    kernel_end = load_addr + footprint
    if hdr.version >= PREF_ADDRESS_VERSION and hdr.pref_address >= MIB:
        # Loaded lower, the decompressor still unpacks to LOAD_PHYSICAL_ADDR
        # (= pref_address) and needs init_size bytes there: keep the initrd above.
        kernel_end = max(kernel_end, hdr.pref_address + hdr.init_size)
    if kernel_end > low_top:
        raise ImageError(
            f"{name} needs {kernel_end >> 20} MiB of low memory to unpack, the guest has"
            f" {low_top >> 20} MiB: give the guest more memory"
        )
    cmdline_size = write_cmdline(memory, cmdline, hdr.cmdline_size)

    initrd_addr = 0
    if initrd:
        addr_max = hdr.initrd_addr_max or INITRD_ADDR_MAX_DEFAULT
        initrd_addr = place_initrd(memory, initrd, kernel_end, addr_max + 1)
    memory.write(load_addr, image.kernel)

    params = BootParams()
    ctypes.memmove(
        ctypes.addressof(params) + SETUP_HEADER_OFFSET, image.header_bytes, len(image.header_bytes)
    )
    if screen_info:
        ctypes.memmove(ctypes.addressof(params), screen_info, min(len(screen_info), 0x40))
    p = params.hdr
    p.vid_mode = 0xFFFF  # "normal"
    p.type_of_loader = LOADER_UNDEFINED
    p.loadflags = (p.loadflags | LOADED_HIGH | CAN_USE_HEAP) & 0xFF
    p.heap_end_ptr = HEAP_END
    p.code32_start = load_addr
    p.cmd_line_ptr = layout.CMDLINE_ADDR
    p.ramdisk_image = initrd_addr
    p.ramdisk_size = len(initrd) if initrd else 0
    if hdr.version >= RSDP_VERSION:
        params.acpi_rsdp_addr = rsdp_addr
    e820 = layout.e820_map(memory)[:E820_MAX_ENTRIES_ZEROPAGE]
    for i, entry in enumerate(e820):
        params.e820_table[i].addr = entry.addr
        params.e820_table[i].size = entry.size
        params.e820_table[i].type = entry.type
    params.e820_entries = len(e820)
    memory.write(layout.ZERO_PAGE_ADDR, bytes(params))
    write_boot_structures(memory, "long64")
    return BootPlan(
        mode="long64",
        entry=load_addr + ENTRY_64_OFFSET,
        boot_info=layout.ZERO_PAGE_ADDR,
        kernel_addr=load_addr,
        kernel_end=kernel_end,
        cmdline_addr=layout.CMDLINE_ADDR,
        cmdline_size=cmdline_size,
        initrd_addr=initrd_addr,
        initrd_size=len(initrd) if initrd else 0,
        rsdp_addr=rsdp_addr,
    )

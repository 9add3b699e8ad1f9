"""One entry point for booting Linux on x86: ``load_kernel``.

It reads the kernel and initrd files (every failure is an ImageError naming
the path), writes the firmware tables (MP table always, ACPI unless turned
off), sniffs the kernel format (bzImage by its "HdrS" boot protocol header;
a Multiboot kernel by its header magic in the first 8 KiB, checked before ELF
because kvm-unit-tests' ``*.flat`` are ELF32 files with such a header, and the
initrd then becomes its one module; ELF vmlinux by its magic, booted through
the PVH entry) and hands the rest to the matching loader. The returned
BootPlan goes to ``cpu.apply_boot_state`` for the BSP (``plan.cpu_state()``);
see the module docstrings of bzimage.py, multiboot.py and pvh.py for what each
loader places where, and layout.py for the map.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from kvmlite.arch.x86 import bzimage, elf, layout, mptable, multiboot, pvh
from kvmlite.arch.x86.acpi import Ecam, build_acpi_tables
from kvmlite.arch.x86.bootplan import BootPlan
from kvmlite.errors import ImageError
from kvmlite.memory import GuestMemory

#: Refuse absurd files before reading them into memory.
MAX_FILE_SIZE = 4 << 30


def read_image(path: str | os.PathLike[str], what: str) -> bytes:
    """The whole file, or ImageError saying why it cannot be used."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_SIZE:
                raise ImageError(f"{what} {path} is {size >> 20} MiB: that cannot be a {what}")
            data = f.read()
    except IsADirectoryError:
        raise ImageError(f"{what} {path} is a directory, not a file") from None
    except FileNotFoundError:
        raise ImageError(f"{what} {path} does not exist") from None
    except PermissionError:
        raise ImageError(f"{what} {path} is not readable: check its permissions") from None
    except OSError as e:
        raise ImageError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if not data:
        raise ImageError(f"{what} {path} is empty")
    return data


@dataclass(frozen=True)
class BootImages:
    """A kernel and initrd read from their files, the kernel's format known."""

    name: str
    kernel: bytes
    initrd: bytes | None
    format: str  # "bzimage", "multiboot" or "elf"
    initrd_name: str = ""  # the initrd's path: a Multiboot module's string


def kernel_format(data: bytes, name: str) -> str:
    """Which loader takes this kernel; ImageError if none does."""
    if bzimage.is_bzimage(data):
        return "bzimage"
    if multiboot.is_multiboot(data):
        return "multiboot"
    if elf.is_elf(data):
        return "elf"
    raise ImageError(
        f"kernel {name} is neither a bzImage (no 'HdrS' header at 0x202), a Multiboot kernel"
        " nor an ELF vmlinux: pass arch/x86/boot/bzImage or vmlinux from a kernel build"
    )


def read_boot_images(
    kernel_path: str | os.PathLike[str], initrd_path: str | os.PathLike[str] | None
) -> BootImages:
    """Read both files and check the kernel's format, before anything else is
    built or opened (so a bad kernel changes nothing on the host, rule 7)."""
    name = os.fspath(kernel_path)
    data = read_image(kernel_path, "kernel")
    fmt = kernel_format(data, name)
    initrd = read_image(initrd_path, "initrd") if initrd_path is not None else None
    initrd_name = os.fspath(initrd_path) if initrd_path is not None else ""
    return BootImages(name, data, initrd, fmt, initrd_name)


def load_kernel(
    memory: GuestMemory,
    kernel_path: str | os.PathLike[str] | BootImages,
    initrd_path: str | os.PathLike[str] | None,
    cmdline: str,
    *,
    num_vcpus: int,
    acpi: bool = True,
    pci_routes: Sequence[tuple[int, int, int]] = (),
    ecam: Ecam | None = None,
    mmio32: tuple[int, int] = (layout.PCI_HOLE_START, layout.PCI_MMIO32_END),
    mmio64: tuple[int, int] | None = None,
    screen_info: bytes = b"",
) -> BootPlan:
    """Place firmware tables, kernel, initrd and command line; return the boot plan.

    The kernel is a path (read here, with ``initrd_path``) or ``BootImages``
    read before. ``pci_routes`` are (device, pin 0..3, IOAPIC pin = GSI) rows
    for the MP table and the DSDT's ``_PRT``; ``ecam`` adds an MCFG; ``mmio32``
    is the PCI root bridge's 32-bit window and ``mmio64`` an optional 64-bit
    one (inclusive bounds). ``screen_info`` (a framebuffer; bzImage only: PVH
    has no field for it) goes into the zero page.
    """
    if isinstance(kernel_path, BootImages):
        images = kernel_path
    else:
        images = read_boot_images(kernel_path, initrd_path)
    name, data, initrd = images.name, images.kernel, images.initrd

    mptable.write_mptable(memory, num_vcpus, pci_routes)
    rsdp_addr = 0
    if acpi:
        tables = build_acpi_tables(
            num_vcpus, pci_routes=pci_routes, ecam=ecam, mmio32=mmio32, mmio64=mmio64
        )
        tables.write(memory)
        rsdp_addr = tables.rsdp_addr

    if images.format == "bzimage":
        return bzimage.load_bzimage(
            memory, data, cmdline, initrd, rsdp_addr=rsdp_addr, name=name, screen_info=screen_info
        )
    if images.format == "multiboot":
        modules = [(initrd, images.initrd_name)] if initrd is not None else []
        return multiboot.load_multiboot(
            memory, data, cmdline, modules, rsdp_addr=rsdp_addr, name=name
        )
    return pvh.load_pvh(memory, data, cmdline, initrd, rsdp_addr=rsdp_addr, name=name)

"""QEMU's ``pc-testdev``: the x86 test device kvm-unit-tests drives.

The register map is the one QEMU's hw/misc/pc-testdev.c defines (bhyve's
pctestdev.c implements the same map):

==================  ========  ===========================================
where               size      what
==================  ========  ===========================================
port 0xE0           4         a 32-bit scratch register; an access of n
                              bytes at offset o reads/writes bytes o..o+n-1
port 0xE4           4         "flush page": a 32-bit write of a guest
                              physical address asks the host to drop its
                              mapping of that 4 KiB page (QEMU mprotects it
                              away and back), so the next guest access
                              faults into the host again
port 0xE8           4         the same scratch register as 0xE0, accessed
                              byte by byte (QEMU's impl.max_access_size 1)
ports 0x2000-0x2017 24        interrupt lines: writing ``v`` to 0x2000+n
                              sets ISA/IOAPIC line n to ``v != 0``
MMIO 0xFF000000     64 KiB    ``iomem``: plain memory behind MMIO exits
==================  ========  ===========================================

kvm-unit-tests uses 0xE0 in x86/emulator.c and x86/realmode.c (string and
port I/O emulation), 0xE4 in x86/eventinj.c, the interrupt lines in
lib/x86/apic.c ``set_irq_line`` (x86/ioapic.c), and iomem for MMIO
emulation tests.

Rule 1 of DESIGN.md: the device does no I/O of its own. The lines are
``IrqLine`` objects (``set_level`` is called on every write, even an
unchanged level, as QEMU's qemu_set_irq does: re-asserting a level-triggered
IOAPIC line re-delivers it), and the page flush is a callback the VMM
implements. Guest accesses of odd sizes or crossing a region's end touch
only the bytes inside it; reads of the write-only regions return zeros;
writes of other than one byte to the interrupt lines are dropped, as QEMU's
``valid.max_access_size = 1`` drops them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kvmlite.devices.irq import IrqLine

PC_TESTDEV_IOPORT = 0xE0
PC_TESTDEV_FLUSH = 0xE4
PC_TESTDEV_IOPORT_BYTE = 0xE8
PC_TESTDEV_REG_SIZE = 4
PC_TESTDEV_IRQ_BASE = 0x2000
PC_TESTDEV_IRQ_LINES = 24
PC_TESTDEV_IOMEM_BASE = 0xFF000000
PC_TESTDEV_IOMEM_SIZE = 0x10000
PAGE_MASK = ~0xFFF & 0xFFFFFFFF


@dataclass(frozen=True)
class PcTestdevState:
    ioport_data: int
    irq_levels: tuple[bool, ...]
    iomem: bytes


class PcTestdev:
    """The device; the bus regions are ``ioport``, ``flush``, ``ioport_byte``, ``irq`` and
    ``iomem_region`` (each a ``read``/``write`` view onto this one state)."""

    State = PcTestdevState
    name = "pc-testdev"

    def __init__(
        self,
        irq_lines: Sequence[IrqLine] = (),
        flush_page: Callable[[int], None] | None = None,
    ) -> None:
        if irq_lines and len(irq_lines) != PC_TESTDEV_IRQ_LINES:
            raise ValueError(f"pc-testdev wants {PC_TESTDEV_IRQ_LINES} interrupt lines")
        self._lines = list(irq_lines)
        self._flush_page = flush_page
        self.ioport_data = 0
        self.irq_levels = [False] * PC_TESTDEV_IRQ_LINES
        self.iomem = bytearray(PC_TESTDEV_IOMEM_SIZE)
        self.ioport = _Scratch(self, "pc-testdev-ioport")
        self.ioport_byte = _Scratch(self, "pc-testdev-ioport-byte")
        self.flush = _Flush(self)
        self.irq = _IrqLines(self)
        self.iomem_region = _Iomem(self)

    # -- the registers, by region ----------------------------------------------------

    def read_scratch(self, offset: int, size: int) -> bytes:
        raw = self.ioport_data.to_bytes(PC_TESTDEV_REG_SIZE, "little")
        return bytes(
            raw[offset + i] if offset + i < PC_TESTDEV_REG_SIZE else 0 for i in range(size)
        )

    def write_scratch(self, offset: int, data: bytes) -> None:
        raw = bytearray(self.ioport_data.to_bytes(PC_TESTDEV_REG_SIZE, "little"))
        for i, b in enumerate(data):
            if offset + i < PC_TESTDEV_REG_SIZE:
                raw[offset + i] = b
        self.ioport_data = int.from_bytes(raw, "little")

    def write_flush(self, offset: int, data: bytes) -> None:
        if offset == 0 and len(data) == 4 and self._flush_page is not None:
            self._flush_page(int.from_bytes(data, "little") & PAGE_MASK)

    def write_irq(self, offset: int, data: bytes) -> None:
        # QEMU's irq region is valid for 1-byte accesses only: wider ones are dropped.
        if len(data) != 1 or offset >= PC_TESTDEV_IRQ_LINES:
            return
        level = data[0] != 0
        self.irq_levels[offset] = level
        if self._lines:
            self._lines[offset].set_level(level)

    def read_iomem(self, offset: int, size: int) -> bytes:
        chunk = bytes(self.iomem[offset : offset + size])
        return chunk.ljust(size, b"\0")

    def write_iomem(self, offset: int, data: bytes) -> None:
        data = data[: max(0, PC_TESTDEV_IOMEM_SIZE - offset)]
        self.iomem[offset : offset + len(data)] = data

    # -- snapshot ----------------------------------------------------------------------

    def save(self) -> PcTestdevState:
        return PcTestdevState(self.ioport_data, tuple(self.irq_levels), bytes(self.iomem))

    def restore(self, state: PcTestdevState) -> None:
        self.ioport_data = state.ioport_data & 0xFFFFFFFF
        levels = list(state.irq_levels)[:PC_TESTDEV_IRQ_LINES]
        self.irq_levels = levels + [False] * (PC_TESTDEV_IRQ_LINES - len(levels))
        self.iomem = bytearray(
            state.iomem[:PC_TESTDEV_IOMEM_SIZE].ljust(PC_TESTDEV_IOMEM_SIZE, b"\0")
        )
        for line, level in zip(self._lines, self.irq_levels, strict=False):
            line.set_level(level)


class _Scratch:
    def __init__(self, dev: PcTestdev, name: str) -> None:
        self._dev = dev
        self.name = name

    def read(self, offset: int, size: int) -> bytes:
        return self._dev.read_scratch(offset, size)

    def write(self, offset: int, data: bytes) -> None:
        self._dev.write_scratch(offset, data)


class _Flush:
    name = "pc-testdev-flush-page"

    def __init__(self, dev: PcTestdev) -> None:
        self._dev = dev

    def read(self, offset: int, size: int) -> bytes:
        return bytes(size)

    def write(self, offset: int, data: bytes) -> None:
        self._dev.write_flush(offset, data)


class _IrqLines:
    name = "pc-testdev-irq-line"

    def __init__(self, dev: PcTestdev) -> None:
        self._dev = dev

    def read(self, offset: int, size: int) -> bytes:
        return bytes(size)

    def write(self, offset: int, data: bytes) -> None:
        self._dev.write_irq(offset, data)


class _Iomem:
    name = "pc-testdev-iomem"

    def __init__(self, dev: PcTestdev) -> None:
        self._dev = dev

    def read(self, offset: int, size: int) -> bytes:
        return self._dev.read_iomem(offset, size)

    def write(self, offset: int, data: bytes) -> None:
        self._dev.write_iomem(offset, data)

"""PCI configuration space of one function (PCI Local Bus 3.0 §6, type 0 header).

Theory of operation
-------------------
The space is a byte array (256 bytes, or 4096 for PCIe extended space via
ECAM) plus two per-byte masks: ``wmask`` (bits the guest may write) and
``w1cmask`` (bits a guest write of 1 clears: the status register's error
bits). Every write goes through the masks, so read-only IDs, RO capability
fields and the BAR flag bits can never be changed by the guest.

BAR sizing falls out of the masks: a memory BAR of size S has writable bits
``~(S-1)`` above the flag bits, so writing all-ones reads back the size mask
(§6.2.5.1) and any address written is aligned down to S. A 64-bit BAR uses
two registers; the upper one is fully writable unless S > 4 GiB.

Capabilities (§6.7) are appended to a linked list starting at 0x34; each
gets its own write mask from the caller.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kvmlite.errors import StateError

# Header registers (offsets), named as in linux/pci_regs.h.
PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_COMMAND = 0x04
PCI_STATUS = 0x06
PCI_REVISION_ID = 0x08
PCI_CLASS_PROG = 0x09
PCI_CACHE_LINE_SIZE = 0x0C
PCI_LATENCY_TIMER = 0x0D
PCI_HEADER_TYPE = 0x0E
PCI_BASE_ADDRESS_0 = 0x10
PCI_SUBSYSTEM_VENDOR_ID = 0x2C
PCI_SUBSYSTEM_ID = 0x2E
PCI_CAPABILITY_LIST = 0x34
PCI_INTERRUPT_LINE = 0x3C
PCI_INTERRUPT_PIN = 0x3D

PCI_COMMAND_IO = 0x1
PCI_COMMAND_MEMORY = 0x2
PCI_COMMAND_MASTER = 0x4
PCI_COMMAND_PARITY = 0x40
PCI_COMMAND_SERR = 0x100
PCI_COMMAND_INTX_DISABLE = 0x400
COMMAND_WMASK = (
    PCI_COMMAND_IO
    | PCI_COMMAND_MEMORY
    | PCI_COMMAND_MASTER
    | PCI_COMMAND_PARITY
    | PCI_COMMAND_SERR
    | PCI_COMMAND_INTX_DISABLE
)

PCI_STATUS_INTERRUPT = 0x8
PCI_STATUS_CAP_LIST = 0x10
#: Error bits a write of 1 clears (master data parity, target/master aborts, SERR, parity).
STATUS_W1C = 0x0100 | 0x0800 | 0x1000 | 0x2000 | 0x4000 | 0x8000

PCI_BASE_ADDRESS_SPACE_IO = 0x1
PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4
PCI_BASE_ADDRESS_MEM_PREFETCH = 0x8

PCI_CAP_ID_VNDR = 0x09
PCI_CAP_ID_MSIX = 0x11

CONFIG_SIZE = 256
EXT_CONFIG_SIZE = 4096
CAP_START = 0x40


class BarKind(enum.Enum):
    MEM32 = "mem32"
    MEM64 = "mem64"
    IO = "io"


@dataclass(frozen=True)
class Bar:
    index: int
    size: int
    kind: BarKind
    prefetchable: bool = False

    @property
    def is_memory(self) -> bool:
        return self.kind is not BarKind.IO


@dataclass(frozen=True)
class PciConfigState:
    data: bytes


class PciConfigSpace:
    """The config registers of one PCI function, with write masks."""

    def __init__(
        self,
        *,
        vendor_id: int,
        device_id: int,
        class_code: int,
        revision: int = 0,
        subsystem_vendor_id: int = 0,
        subsystem_id: int = 0,
        header_type: int = 0,
        interrupt_pin: int = 0,
        extended: bool = True,
    ) -> None:
        size = EXT_CONFIG_SIZE if extended else CONFIG_SIZE
        self.data = bytearray(size)
        self.wmask = bytearray(size)
        self.w1cmask = bytearray(size)
        self.bars: list[Bar | None] = [None] * 6
        self._cap_end = CAP_START
        self._last_cap: int | None = None
        self.set(PCI_VENDOR_ID, 2, vendor_id)
        self.set(PCI_DEVICE_ID, 2, device_id)
        self.set(PCI_REVISION_ID, 1, revision)
        self.set(PCI_CLASS_PROG, 3, class_code)
        self.set(PCI_HEADER_TYPE, 1, header_type)
        self.set(PCI_SUBSYSTEM_VENDOR_ID, 2, subsystem_vendor_id)
        self.set(PCI_SUBSYSTEM_ID, 2, subsystem_id)
        self.set(PCI_INTERRUPT_PIN, 1, interrupt_pin)
        self.set_wmask(PCI_COMMAND, 2, COMMAND_WMASK)
        self.set_w1cmask(PCI_STATUS, 2, STATUS_W1C)
        self.set_wmask(PCI_CACHE_LINE_SIZE, 1, 0xFF)
        self.set_wmask(PCI_LATENCY_TIMER, 1, 0xFF)
        self.set_wmask(PCI_INTERRUPT_LINE, 1, 0xFF)

    @property
    def size(self) -> int:
        return len(self.data)

    # -- raw helpers (host side: no masks) --------------------------------------------

    def get(self, offset: int, size: int) -> int:
        return int.from_bytes(self.data[offset : offset + size], "little")

    def set(self, offset: int, size: int, value: int) -> None:
        self.data[offset : offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(
            size, "little"
        )

    def set_wmask(self, offset: int, size: int, mask: int) -> None:
        self.wmask[offset : offset + size] = mask.to_bytes(size, "little")

    def set_w1cmask(self, offset: int, size: int, mask: int) -> None:
        self.w1cmask[offset : offset + size] = mask.to_bytes(size, "little")

    # -- guest access ---------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """A guest read; outside the space reads as all-ones (no device there)."""
        if offset < 0 or offset + size > len(self.data):
            return (1 << (8 * size)) - 1
        return self.get(offset, size)

    def write(self, offset: int, data: bytes) -> None:
        """A guest write through the write masks."""
        if offset < 0 or offset + len(data) > len(self.data):
            return
        for i, b in enumerate(data):
            o = offset + i
            wm, cm = self.wmask[o], self.w1cmask[o]
            old = self.data[o]
            self.data[o] = ((old & ~wm) | (b & wm)) & ~(b & cm) & 0xFF

    # -- BARs ----------------------------------------------------------------------------

    def add_bar(self, index: int, size: int, kind: BarKind, prefetchable: bool = False) -> Bar:
        """Declare BAR ``index`` of ``size`` bytes (a power of two)."""
        if size & (size - 1) or size < (16 if kind is not BarKind.IO else 4):
            raise ValueError(f"BAR size {size:#x} must be a power of two >= 16 (4 for I/O)")
        if not 0 <= index < 6 or (kind is BarKind.MEM64 and index == 5):
            raise ValueError(f"bad BAR index {index} for a {kind.value} BAR")
        slots = [index, index + 1] if kind is BarKind.MEM64 else [index]
        if any(self.bars[i] is not None for i in slots):
            raise ValueError(f"BAR {index} already in use")
        bar = Bar(index, size, kind, prefetchable)
        reg = PCI_BASE_ADDRESS_0 + 4 * index
        if kind is BarKind.IO:
            self.set(reg, 4, PCI_BASE_ADDRESS_SPACE_IO)
            self.set_wmask(reg, 4, ~(size - 1) & 0xFFFFFFFC)
        else:
            flags = PCI_BASE_ADDRESS_MEM_PREFETCH if prefetchable else 0
            if kind is BarKind.MEM64:
                flags |= PCI_BASE_ADDRESS_MEM_TYPE_64
            self.set(reg, 4, flags)
            self.set_wmask(reg, 4, ~(size - 1) & 0xFFFFFFF0)
            if kind is BarKind.MEM64:
                self.set_wmask(reg + 4, 4, (~(size - 1) >> 32) & 0xFFFFFFFF)
        for i in slots:
            self.bars[i] = bar
        return bar

    def bar(self, index: int) -> Bar | None:
        bar = self.bars[index]
        return bar if bar is not None and bar.index == index else None

    def bar_address(self, index: int) -> int:
        """The address programmed in BAR ``index`` (without flag bits)."""
        bar = self.bar(index)
        if bar is None:
            return 0
        reg = PCI_BASE_ADDRESS_0 + 4 * index
        if bar.kind is BarKind.IO:
            return self.get(reg, 4) & ~0x3 & 0xFFFFFFFF
        addr = self.get(reg, 4) & ~0xF & 0xFFFFFFFF
        if bar.kind is BarKind.MEM64:
            addr |= self.get(reg + 4, 4) << 32
        return addr

    def set_bar_address(self, index: int, address: int) -> None:
        """Host-side placement (kvmlite assigns BARs at build time)."""
        bar = self.bar(index)
        if bar is None or address % bar.size:
            raise ValueError(f"BAR {index}: address {address:#x} not aligned to its size")
        reg = PCI_BASE_ADDRESS_0 + 4 * index
        low_flags = self.get(reg, 4) & (0x3 if bar.kind is BarKind.IO else 0xF)
        self.set(reg, 4, (address & 0xFFFFFFFF) | low_flags)
        if bar.kind is BarKind.MEM64:
            self.set(reg + 4, 4, address >> 32)

    def bar_sizing(self, index: int) -> bool:
        """True while the guest has all-ones in the BAR's low register (sizing it)."""
        bar = self.bar(index)
        if bar is None:
            return False
        reg = PCI_BASE_ADDRESS_0 + 4 * index
        wm = int.from_bytes(self.wmask[reg : reg + 4], "little")
        return self.get(reg, 4) & wm == wm

    # -- capabilities ----------------------------------------------------------------------

    def add_capability(self, cap_id: int, body: bytes, wmask: bytes | None = None) -> int:
        """Append a capability (``body`` follows the id/next bytes); returns its offset."""
        offset = self._cap_end
        length = 2 + len(body)
        if offset + length > CONFIG_SIZE:
            raise ValueError("PCI capabilities do not fit in the 256-byte config space")
        self.data[offset] = cap_id
        self.data[offset + 1] = 0
        self.data[offset + 2 : offset + length] = body
        if wmask is not None:
            if len(wmask) != len(body):
                raise ValueError("capability write mask must be as long as its body")
            self.wmask[offset + 2 : offset + length] = wmask
        if self._last_cap is None:
            self.set(PCI_CAPABILITY_LIST, 1, offset)
            self.set(PCI_STATUS, 2, self.get(PCI_STATUS, 2) | PCI_STATUS_CAP_LIST)
        else:
            self.data[self._last_cap + 1] = offset
        self._last_cap = offset
        self._cap_end = (offset + length + 3) & ~3
        return offset

    def capabilities(self) -> list[tuple[int, int]]:
        """Walk the list as a guest would: [(offset, cap id), ...]."""
        out: list[tuple[int, int]] = []
        ptr = self.get(PCI_CAPABILITY_LIST, 1)
        while ptr and len(out) < 48:
            out.append((ptr, self.data[ptr]))
            ptr = self.data[ptr + 1]
        return out

    # -- state -----------------------------------------------------------------------------

    def save(self) -> PciConfigState:
        return PciConfigState(bytes(self.data))

    def load_state(self, state: PciConfigState) -> None:
        if len(state.data) != len(self.data):
            raise StateError(
                f"PCI config space of {len(state.data)} bytes in the snapshot, expected"
                f" {len(self.data)}: restore into a machine with the same devices"
            )
        # Read-only bytes must match what this build made, or the device differs.
        for o in (PCI_VENDOR_ID, PCI_DEVICE_ID, PCI_CLASS_PROG):
            if state.data[o : o + 2] != self.data[o : o + 2]:
                raise StateError(f"PCI device identity differs in the snapshot at {o:#x}")
        self.data[:] = state.data

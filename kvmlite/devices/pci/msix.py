"""MSI-X: the capability, vector table and pending-bit array (PCI 3.0 §6.8.2).

Theory of operation
-------------------
The table (16 bytes per vector: address low/high, data, vector control) and
the PBA (one bit per vector, in 64-bit words) live in a memory BAR; the
capability in config space holds the table size, the BAR/offset of each,
and the Enable and Function Mask bits.

A device raises vector ``v`` with ``notify(v)``. If MSI-X is disabled it
returns False (the caller falls back to INTx). If the vector or the function
is masked, the vector's pending bit is set and the message is held; it is
sent when the guest unmasks (§6.8.2.9). Otherwise the message goes out,
either through an ``Interrupt`` the VMM attached to that vector (an irqfd on
a GSI routed to this address/data: the fast path) or through the
``signal_msi(address, data)`` callback (KVM_SIGNAL_MSI, or a test).

The VMM learns of every change to a vector's address, data or effective mask
through ``on_vector_change(vector, address, data, masked)`` and reprograms
its KVM GSI route from it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from kvmlite.devices.irq import Interrupt
from kvmlite.devices.pci.config import PCI_CAP_ID_MSIX, PciConfigSpace
from kvmlite.errors import StateError

MSIX_ENTRY_SIZE = 16
PCI_MSIX_FLAGS_ENABLE = 0x8000
PCI_MSIX_FLAGS_MASKALL = 0x4000
PCI_MSIX_ENTRY_CTRL_MASKBIT = 1
MAX_VECTORS = 2048

VectorChange = Callable[[int, int, int, bool], None]


@dataclass(frozen=True)
class MsixState:
    entries: tuple[tuple[int, int, int, int], ...]  # addr_lo, addr_hi, data, control
    pending: tuple[bool, ...]
    enabled: bool
    function_masked: bool


class MsixTable:
    """The MSI-X vectors of one PCI function."""

    def __init__(
        self,
        num_vectors: int,
        *,
        signal_msi: Callable[[int, int], object] | None = None,
        on_vector_change: VectorChange | None = None,
    ) -> None:
        if not 1 <= num_vectors <= MAX_VECTORS:
            raise ValueError(f"MSI-X vector count {num_vectors} must be 1..2048")
        self.num_vectors = num_vectors
        self.signal_msi = signal_msi
        self.on_vector_change = on_vector_change
        self.vector_interrupts: list[Interrupt | None] = [None] * num_vectors
        self.cap_offset: int | None = None
        self.reset()

    def reset(self) -> None:
        # Vectors come out of reset masked (§6.8.2.9).
        self.entries = [[0, 0, 0, PCI_MSIX_ENTRY_CTRL_MASKBIT] for _ in range(self.num_vectors)]
        self.pending = [False] * self.num_vectors
        self.enabled = False
        self.function_masked = False

    @property
    def table_size(self) -> int:
        return self.num_vectors * MSIX_ENTRY_SIZE

    @property
    def pba_size(self) -> int:
        return ((self.num_vectors + 63) // 64) * 8

    # -- capability ------------------------------------------------------------------------

    def add_capability(
        self,
        config: PciConfigSpace,
        table_bar: int,
        table_offset: int,
        pba_bar: int,
        pba_offset: int,
    ) -> int:
        """Add the MSI-X capability to ``config``; returns its offset."""
        body = struct.pack(
            "<HII", self.num_vectors - 1, table_offset | table_bar, pba_offset | pba_bar
        )
        wmask = struct.pack("<HII", PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL, 0, 0)
        self.cap_offset = config.add_capability(PCI_CAP_ID_MSIX, body, wmask)
        return self.cap_offset

    def sync_from_config(self, config: PciConfigSpace) -> None:
        """Pick up Enable/Function Mask after a config write (call from the device)."""
        if self.cap_offset is None:
            return
        ctrl = config.get(self.cap_offset + 2, 2)
        enabled = bool(ctrl & PCI_MSIX_FLAGS_ENABLE)
        fmask = bool(ctrl & PCI_MSIX_FLAGS_MASKALL)
        if (enabled, fmask) == (self.enabled, self.function_masked):
            return
        self.enabled, self.function_masked = enabled, fmask
        for v in range(self.num_vectors):
            self._changed(v)
            self._deliver_pending(v)

    def sync_to_config(self, config: PciConfigSpace) -> None:
        """Write Enable/Function Mask back into config space (after restore)."""
        if self.cap_offset is None:
            return
        ctrl = self.num_vectors - 1
        ctrl |= PCI_MSIX_FLAGS_ENABLE if self.enabled else 0
        ctrl |= PCI_MSIX_FLAGS_MASKALL if self.function_masked else 0
        config.set(self.cap_offset + 2, 2, ctrl)

    # -- vectors ---------------------------------------------------------------------------

    def set_vector_interrupt(self, vector: int, interrupt: Interrupt | None) -> None:
        """Attach the VMM's delivery object for ``vector`` (an irqfd), or detach it."""
        self.vector_interrupts[vector] = interrupt

    def address(self, vector: int) -> int:
        e = self.entries[vector]
        return e[0] | (e[1] << 32)

    def data(self, vector: int) -> int:
        return self.entries[vector][2]

    def masked(self, vector: int) -> bool:
        """Effective mask: vector mask bit, function mask, or MSI-X disabled."""
        return (
            bool(self.entries[vector][3] & PCI_MSIX_ENTRY_CTRL_MASKBIT)
            or self.function_masked
            or not self.enabled
        )

    def _changed(self, vector: int) -> None:
        if self.on_vector_change is not None:
            self.on_vector_change(
                vector, self.address(vector), self.data(vector), self.masked(vector)
            )

    def _send(self, vector: int) -> None:
        irq = self.vector_interrupts[vector]
        if irq is not None:
            irq.trigger()
        elif self.signal_msi is not None:
            self.signal_msi(self.address(vector), self.data(vector))

    def _deliver_pending(self, vector: int) -> None:
        if self.pending[vector] and not self.masked(vector):
            self.pending[vector] = False
            self._send(vector)

    def notify(self, vector: int) -> bool:
        """Raise ``vector``; False if MSI-X is disabled (use INTx instead)."""
        if not self.enabled:
            return False
        if not 0 <= vector < self.num_vectors:
            return True  # a guest-chosen vector we do not have: nothing to send
        if self.entries[vector][3] & PCI_MSIX_ENTRY_CTRL_MASKBIT or self.function_masked:
            self.pending[vector] = True
        else:
            self._send(vector)
        return True

    # -- BAR access --------------------------------------------------------------------------

    def read_table(self, offset: int, size: int) -> bytes:
        if offset < 0 or offset + size > self.table_size:
            return bytes(size)
        raw = b"".join(struct.pack("<IIII", *e) for e in self.entries[offset // 16 :][:2])
        start = offset % 16
        return raw[start : start + size]

    def write_table(self, offset: int, data: bytes) -> None:
        """Guest write to the table; 4- and 8-byte accesses per the spec, any size accepted."""
        if offset < 0 or offset + len(data) > self.table_size:
            return
        for i, b in enumerate(data):
            o = offset + i
            vector, field_off = divmod(o, MSIX_ENTRY_SIZE)
            word, byte = divmod(field_off, 4)
            e = self.entries[vector]
            e[word] = (e[word] & ~(0xFF << (8 * byte))) | (b << (8 * byte))
        first, last = offset // 16, (offset + len(data) - 1) // 16
        for v in range(first, last + 1):
            self.entries[v][3] &= PCI_MSIX_ENTRY_CTRL_MASKBIT  # other control bits reserved
            self._changed(v)
            self._deliver_pending(v)

    def read_pba(self, offset: int, size: int) -> bytes:
        if offset < 0 or offset + size > self.pba_size:
            return bytes(size)
        bits = sum(1 << v for v, p in enumerate(self.pending) if p)
        raw = bits.to_bytes(self.pba_size, "little")
        return raw[offset : offset + size]

    # -- state ------------------------------------------------------------------------------

    def save(self) -> MsixState:
        return MsixState(
            entries=tuple((e[0], e[1], e[2], e[3]) for e in self.entries),
            pending=tuple(self.pending),
            enabled=self.enabled,
            function_masked=self.function_masked,
        )

    def load_state(self, state: MsixState) -> None:
        if len(state.entries) != self.num_vectors or len(state.pending) != self.num_vectors:
            raise StateError(
                f"MSI-X table of {len(state.entries)} vectors in the snapshot, expected"
                f" {self.num_vectors}: restore with the same device options"
            )
        self.entries = [list(e) for e in state.entries]
        self.pending = list(state.pending)
        self.enabled = state.enabled
        self.function_masked = state.function_masked
        for v in range(self.num_vectors):
            self._changed(v)

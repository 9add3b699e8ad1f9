"""The device manager: the machine's devices as an ordered, typed list.

Each entry says what the device is (``model``), what carries it to the guest
(``transport``: a virtio-pci or virtio-mmio transport, or None for a device
that sits on a bus by itself) and where it sits (``placements``: ports, MMIO
ranges, a PCI slot). Entries keep the order the builder added them in, which
is the order their state is saved in (kvmlite/vmm/persist.py) and the
reverse of the order they are closed in. Look-ups are by id, with the type
the caller expects: ``devices.get("disk0", VirtioBlock)`` fails with a clear
message if disk0 is something else, instead of handing back ``Any``.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kvmlite.errors import KvmliteError
from kvmlite.vmm.locking import Lock

M = TypeVar("M")


class DeviceNotFound(KvmliteError, KeyError):
    """No device has that id (or it is of another type)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class BusKind(enum.Enum):
    PIO = "pio"
    MMIO = "mmio"
    PCI = "pci"


@dataclass(frozen=True)
class Placement:
    """Where a device answers: ``bus`` at ``address`` (port, guest-physical
    address, or PCI device number on bus 0) for ``size`` bytes; its IRQ if any."""

    bus: BusKind
    address: int
    size: int = 0
    irq: int | None = None

    def __str__(self) -> str:
        where = f"{self.bus.value} {self.address:#x}"
        if self.size:
            where += f"+{self.size:#x}"
        return where + (f" irq {self.irq}" if self.irq is not None else "")


@dataclass(frozen=True)
class DeviceEntry(Generic[M]):
    id: str
    model: M
    transport: object = None
    placements: tuple[Placement, ...] = ()
    #: The lock that guards the model (kvmlite/vmm/locking.py), None if it needs none.
    lock: Lock | None = None

    @property
    def kind(self) -> str:
        return type(self.model).__name__

    def locked(self) -> Lock:
        """``with entry.locked():`` holds what a vCPU's register access would."""
        return self.lock if self.lock is not None else contextlib.nullcontext()


class DeviceManager:
    """An ordered, typed list of the machine's devices (see the module docstring)."""

    def __init__(self) -> None:
        self._entries: list[DeviceEntry[Any]] = []
        self._by_id: dict[str, DeviceEntry[Any]] = {}

    def add(
        self,
        id: str,
        model: M,
        *,
        transport: object = None,
        placements: tuple[Placement, ...] = (),
        lock: Lock | None = None,
    ) -> DeviceEntry[M]:
        if id in self._by_id:
            raise KvmliteError(f"two devices with the id {id!r}")
        entry = DeviceEntry(id, model, transport, placements, lock)
        self._entries.append(entry)
        self._by_id[id] = entry
        return entry

    def entry(self, id: str) -> DeviceEntry[Any]:
        try:
            return self._by_id[id]
        except KeyError:
            known = ", ".join(self._by_id) or "none"
            raise DeviceNotFound(f"no device {id!r} (devices: {known})") from None

    def get(self, id: str, kind: type[M]) -> M:
        """The model of device ``id``, which must be a ``kind``."""
        model = self.entry(id).model
        if not isinstance(model, kind):
            raise DeviceNotFound(
                f"device {id!r} is a {type(model).__name__}, not a {kind.__name__}"
            )
        return model

    def transport(self, id: str, kind: type[M]) -> M:
        """The transport of device ``id``, which must be a ``kind``."""
        transport = self.entry(id).transport
        if not isinstance(transport, kind):
            raise DeviceNotFound(f"device {id!r} has no {kind.__name__} transport")
        return transport

    def of_type(self, kind: type[M]) -> list[DeviceEntry[M]]:
        """Every entry whose model is a ``kind``, in order."""
        return [e for e in self._entries if isinstance(e.model, kind)]

    def __contains__(self, id: object) -> bool:
        return id in self._by_id

    def __iter__(self) -> Iterator[DeviceEntry[Any]]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def ids(self) -> list[str]:
        return [e.id for e in self._entries]

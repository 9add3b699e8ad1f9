"""The PCI host bridge: bus 0, config mechanism #1, ECAM, BAR placement, INTx routing.

Specs: PCI 3.0 §3.2.2.3.2 (configuration mechanism #1, ports 0xCF8/0xCFC),
PCI Express Base §7.2.2 (ECAM: bus<<20 | device<<15 | function<<12 | reg),
PCI-to-PCI Bridge 1.2 §9.1 (INTx swizzle).

Theory of operation
-------------------
``PciRoot`` holds the 32 device slots of bus 0 (function 0 only); slot 0 is
the host bridge (Intel 0x8086:0x0d57 "host bridge", class 0x060000, the IDs
Firecracker uses). Two bus devices give the guest config access:

* ``root.config_io``: insert on the PIO bus at 0xCF8, size 8. Offsets 0-3
  are CONFIG_ADDRESS, 4-7 CONFIG_DATA (byte/word accesses at 0xCFC-0xCFF
  reach the matching bytes of the dword). A byte write to 0xCF9 is the
  reset control register: value with bit 2 set calls ``reset_handler``.
* ``root.ecam``: insert on the MMIO bus at the MCFG base, size
  ``ECAM_SIZE`` (1 MiB: bus 0 only).

INTx: function 0 of slot S with pin P (1 = INTA) is routed to
GSI ``intx_base_gsi + (S + P - 1) % 4`` (16..19 by default, the IOAPIC pins
above the ISA ones). The lines are level-triggered and shared; a
``SharedIrqLine`` ORs the devices on one GSI so one deasserting does not
drop another's request. ``interrupt_routes()`` lists the routes for the
MP table and the DSDT _PRT.

BARs: ``allocate_bars(mmio32, mmio64, io)`` places every BAR at build time,
naturally aligned, largest first; 64-bit BARs go into the 64-bit window when
one is given. The guest may move them later (see ``PciDevice.on_bar_change``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kvmlite.devices.irq import IrqLine
from kvmlite.devices.pci.config import BarKind, PciConfigSpace
from kvmlite.devices.pci.device import PciDevice, PciDeviceState
from kvmlite.devices.persist import Persist
from kvmlite.errors import ConfigError

PCI_CONFIG_IO_BASE = 0xCF8
PCI_CONFIG_IO_SIZE = 8
ECAM_SIZE = 1 << 20
NUM_SLOTS = 32
DEFAULT_INTX_BASE_GSI = 16

HOST_BRIDGE_VENDOR = 0x8086
HOST_BRIDGE_DEVICE = 0x0D57
PCI_CLASS_BRIDGE_HOST = 0x060000


class PciHostBridge(PciDevice, Persist[PciDeviceState]):
    """Slot 0: the host bridge, with nothing but an identity."""

    name = "pci-host-bridge"

    def __init__(self) -> None:
        super().__init__(
            PciConfigSpace(
                vendor_id=HOST_BRIDGE_VENDOR,
                device_id=HOST_BRIDGE_DEVICE,
                class_code=PCI_CLASS_BRIDGE_HOST,
            )
        )

    def save(self) -> PciDeviceState:
        return self.save_pci()

    def load_state(self, state: PciDeviceState) -> None:
        self.restore_pci(state)


class SharedIrqLine:
    """A level-triggered line shared by several sources (wired-OR)."""

    def __init__(self, line: IrqLine) -> None:
        self.line = line
        self.asserted: set[int] = set()

    def source(self, key: int) -> IrqLine:
        shared = self

        class _Source:
            def set_level(self, level: bool) -> None:
                shared.set_source(key, level)

        return _Source()

    def set_source(self, key: int, level: bool) -> None:
        was = bool(self.asserted)
        if level:
            self.asserted.add(key)
        else:
            self.asserted.discard(key)
        now = bool(self.asserted)
        if now != was:
            self.line.set_level(now)


@dataclass(frozen=True)
class IntxRoute:
    """One INTx route: slot (device number on bus 0), pin 1..4 (INTA..INTD), GSI."""

    slot: int
    pin: int
    gsi: int
    device: PciDevice


class PciConfigIo:
    """Configuration mechanism #1 as a PIO bus device (base 0xCF8, size 8)."""

    def __init__(self, root: PciRoot) -> None:
        self.root = root
        self.address = 0

    def _target(self, offset: int) -> tuple[int, int, int, int] | None:
        a = self.address
        if not a & 0x80000000:
            return None
        reg = (a & 0xFC) + (offset - 4)
        return (a >> 16) & 0xFF, (a >> 11) & 0x1F, (a >> 8) & 0x7, reg

    def read(self, offset: int, size: int) -> bytes:
        if offset < 4:
            data = self.address.to_bytes(4, "little")[offset : offset + size]
            return data.ljust(size, b"\xff")
        t = self._target(offset)
        if t is None or offset + size > 8:
            return b"\xff" * size
        value = self.root.config_read(*t, size)
        return value.to_bytes(size, "little")

    def write(self, offset: int, data: bytes) -> None:
        if offset == 1 and len(data) == 1:
            # Port 0xCF9: reset control register (bit 2 = reset CPU).
            if data[0] & 0x4 and self.root.reset_handler is not None:
                self.root.reset_handler()
            return
        if offset == 0 and len(data) == 4:
            self.address = int.from_bytes(data, "little") & 0x80FFFFFC
            return
        t = self._target(offset)
        if t is None or offset < 4 or offset + len(data) > 8:
            return
        self.root.config_write(*t, data)


class PciEcam:
    """PCIe enhanced configuration access (ECAM) for bus 0 as an MMIO bus device."""

    def __init__(self, root: PciRoot) -> None:
        self.root = root

    def read(self, offset: int, size: int) -> bytes:
        bus, dev, fn, reg = offset >> 20, (offset >> 15) & 0x1F, (offset >> 12) & 7, offset & 0xFFF
        if size not in (1, 2, 4) or reg + size > 0x1000:
            return b"\xff" * size
        return self.root.config_read(bus, dev, fn, reg, size).to_bytes(size, "little")

    def write(self, offset: int, data: bytes) -> None:
        bus, dev, fn, reg = offset >> 20, (offset >> 15) & 0x1F, (offset >> 12) & 7, offset & 0xFFF
        if len(data) not in (1, 2, 4) or reg + len(data) > 0x1000:
            return
        self.root.config_write(bus, dev, fn, reg, data)


@dataclass(frozen=True)
class PciRootState:
    """The host bridge and the CONFIG_ADDRESS latch (the devices on the bus
    save themselves, with their transports)."""

    host_bridge: PciDeviceState
    config_address: int


class PciRoot(Persist[PciRootState]):
    """Bus 0 with its host bridge and up to 31 more devices."""

    def save(self) -> PciRootState:
        return PciRootState(self.host_bridge.save(), self.config_io.address)

    def load_state(self, state: PciRootState) -> None:
        self.host_bridge.load_state(state.host_bridge)
        self.config_io.address = state.config_address & 0x80FFFFFC

    def __init__(self, *, intx_base_gsi: int = DEFAULT_INTX_BASE_GSI) -> None:
        self.slots: list[PciDevice | None] = [None] * NUM_SLOTS
        self.intx_base_gsi = intx_base_gsi
        self.host_bridge = PciHostBridge()
        self.slots[0] = self.host_bridge
        self.config_io = PciConfigIo(self)
        self.ecam = PciEcam(self)
        self.reset_handler: Callable[[], None] | None = None
        self._shared_lines: dict[int, SharedIrqLine] = {}

    # -- devices ------------------------------------------------------------------------------

    def add_device(self, device: PciDevice, slot: int | None = None) -> int:
        """Put ``device`` in ``slot`` (default: the first free one); returns the slot."""
        if slot is None:
            free = [i for i, d in enumerate(self.slots) if d is None]
            if not free:
                raise ConfigError("PCI bus 0 is full (31 devices): remove a device")
            slot = free[0]
        if not 0 < slot < NUM_SLOTS:
            raise ConfigError(f"PCI slot {slot} is not 1..31")
        if self.slots[slot] is not None:
            raise ConfigError(f"PCI slot {slot} is already used")
        self.slots[slot] = device
        pin = device.config.get(0x3D, 1)
        if pin:
            device.config.set(0x3C, 1, self.intx_gsi(slot, pin))
        return slot

    def devices(self) -> list[tuple[int, PciDevice]]:
        return [(i, d) for i, d in enumerate(self.slots) if d is not None]

    def slot_of(self, device: PciDevice) -> int:
        for i, d in enumerate(self.slots):
            if d is device:
                return i
        raise ValueError("device is not on this PCI bus")

    # -- config access -----------------------------------------------------------------------

    def _device(self, bus: int, dev: int, fn: int) -> PciDevice | None:
        if bus != 0 or fn != 0:
            return None
        return self.slots[dev]

    def config_read(self, bus: int, dev: int, fn: int, reg: int, size: int) -> int:
        d = self._device(bus, dev, fn)
        if d is None:
            return (1 << (8 * size)) - 1  # master abort: all-ones, "no device"
        return d.read_config(reg, size)

    def config_write(self, bus: int, dev: int, fn: int, reg: int, data: bytes) -> None:
        d = self._device(bus, dev, fn)
        if d is not None:
            d.write_config(reg, data)

    # -- INTx --------------------------------------------------------------------------------

    def intx_gsi(self, slot: int, pin: int) -> int:
        """The swizzle: INTA of slot S -> GSI base + S % 4, INTB -> base + (S+1) % 4, ..."""
        return self.intx_base_gsi + (slot + pin - 1) % 4

    def interrupt_routes(self) -> list[IntxRoute]:
        """INTx routes of the devices present (for the MP table and the DSDT _PRT)."""
        out = []
        for slot, d in self.devices():
            pin = d.config.get(0x3D, 1)
            if pin:
                out.append(IntxRoute(slot, pin, self.intx_gsi(slot, pin), d))
        return out

    def connect_intx(self, line_for_gsi: Callable[[int], IrqLine]) -> None:
        """Give each device its INTx line; ``line_for_gsi(gsi)`` is the VMM's IOAPIC line."""
        for route in self.interrupt_routes():
            shared = self._shared_lines.get(route.gsi)
            if shared is None:
                shared = self._shared_lines[route.gsi] = SharedIrqLine(line_for_gsi(route.gsi))
            route.device.intx_line = shared.source(route.slot)

    # -- BAR placement ---------------------------------------------------------------------

    def allocate_bars(
        self,
        mmio32: tuple[int, int],
        mmio64: tuple[int, int] | None = None,
        io: tuple[int, int] | None = None,
    ) -> None:
        """Place every BAR in the (base, size) windows and turn decoding on."""
        cursors = {"32": _Window(*mmio32, "32-bit MMIO")}
        if mmio64 is not None:
            cursors["64"] = _Window(*mmio64, "64-bit MMIO")
        if io is not None:
            cursors["io"] = _Window(*io, "I/O port")
        wanted = []
        for _, d in self.devices():
            for info in d.bars():
                wanted.append((info.size, d, info.index, info.kind))
        wanted.sort(key=lambda w: -w[0])
        for size, d, index, kind in wanted:
            if kind is BarKind.IO:
                window = cursors.get("io")
                if window is None:
                    raise ConfigError(f"{d.name}: has an I/O BAR but no I/O window was given")
            elif kind is BarKind.MEM64 and "64" in cursors:
                window = cursors["64"]
            else:
                window = cursors["32"]
            d.place_bar(index, window.take(size, d.name))
        for _, d in self.devices():
            if d.bars():
                d.enable_decoding()


class _Window:
    def __init__(self, base: int, size: int, what: str) -> None:
        self.next = base
        self.end = base + size
        self.what = what

    def take(self, size: int, who: str) -> int:
        addr = (self.next + size - 1) & ~(size - 1)
        if addr + size > self.end:
            raise ConfigError(f"{who}: the {self.what} window is too small for its BARs")
        self.next = addr + size
        return addr

"""The virtio devices of a machine: disks, SCSI, NICs, entropy, console (in PCI slot order)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kvmlite.vmm.console_io import wire_virtio_console_input
from kvmlite.vmm.network import add_networks

if TYPE_CHECKING:
    from kvmlite.backends.block.base import BlockBackend
    from kvmlite.backends.char.base import CharBackend
    from kvmlite.config import DriveConfig
    from kvmlite.vmm.machine import Machine
    from kvmlite.vmm.virtio import VirtioWiring


def drive_id(index: int, given: str) -> str:
    """A drive's id in the device manager: the user's, or disk0, disk1..."""
    return given or f"disk{index}"


def open_drive(machine: Machine, drive: DriveConfig) -> BlockBackend:
    """The drive's image, locked as its config says; closed with the machine."""
    from kvmlite.backends.block import open_image  # noqa: PLC0415

    backend = open_image(
        str(drive.path),
        drive.format.value if drive.format else None,
        read_only=drive.read_only,
        direct=drive.direct,
        locking=drive.locking,
        force_share=drive.force_share,
    )
    machine.closers.append(backend.close)
    return backend


def add_virtio_devices(machine: Machine, wiring: VirtioWiring) -> None:
    """Disks, NICs, entropy and console, on the transport the user chose."""
    from kvmlite.backends.block.engines import open_engine  # noqa: PLC0415
    from kvmlite.backends.char import open_char  # noqa: PLC0415
    from kvmlite.config.drive import DriveInterface  # noqa: PLC0415
    from kvmlite.devices.virtio import VirtioBlock, VirtioConsole, VirtioRng  # noqa: PLC0415
    from kvmlite.vmm.scsi_devices import add_scsi  # noqa: PLC0415

    config = machine.config
    for n, drive in enumerate(config.drives):
        if drive.interface is not DriveInterface.VIRTIO:
            continue  # on virtio-scsi: add_scsi below
        backend = open_drive(machine, drive)
        # One engine per drive (its aio=), closed before its backend.
        aio = drive.aio.value if drive.aio else None
        what = f"{drive_id(n, drive.id)} {drive.path}"
        executor = open_engine(aio, what=what, direct=drive.direct)
        machine.closers.append(executor.close)
        assert executor.completion_fd is not None
        wiring.watch(executor.completion_fd, executor.run_completions)
        blk = VirtioBlock(
            backend, serial=drive.serial or "", num_queues=drive.queues, executor=executor
        )
        wiring.add(drive_id(n, drive.id), blk)
    add_scsi(machine, wiring)
    add_networks(machine, wiring)
    if config.rng is not None:

        def timer(delay: float, callback: Callable[[], None]) -> None:
            machine.loop.call_later(delay, wiring.locked(callback))

        rng = VirtioRng(rate_limit=config.rng.rate_limit or None, timer=timer)
        wiring.add("rng", rng)
    if config.virtio_console is not None:
        hvc0 = open_char(config.virtio_console.hvc0)
        machine.closers.append(hvc0.close)
        ports: list[tuple[str, CharBackend]] = []
        for name, spec in config.virtio_console.ports:
            port = open_char(spec)
            machine.closers.append(port.close)
            ports.append((name, port))
        console = VirtioConsole(hvc0, ports=ports)
        wiring.add("virtio-console", console)
        wire_virtio_console_input(machine, wiring, console, [hvc0, *(b for _, b in ports)])

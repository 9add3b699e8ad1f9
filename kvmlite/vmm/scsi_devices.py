"""The machine's virtio-scsi adapter: its CD-ROM drives, then its SCSI disks, as LUNs.

One adapter (device id ``scsi0``) carries every ``--cdrom`` drive (LUNs 0..,
ids ``cd0``, ``cd1``... unless given) and then every ``-d PATH,if=scsi``
disk (ids ``diskN`` as for virtio-blk). Each LUN is also in the device
manager under its own id, with the adapter as its transport, so the
management layer finds a drive with ``devices.get("cd0", ScsiCdrom)`` and
changes its medium through the model's media API (docs/cdrom.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvmlite.config.cdrom import cdrom_id
from kvmlite.config.drive import DriveInterface
from kvmlite.vmm.virtio_devices import drive_id, open_drive

if TYPE_CHECKING:
    from kvmlite.vmm.machine import Machine
    from kvmlite.vmm.virtio import VirtioWiring

SCSI_ADAPTER_ID = "scsi0"


def add_scsi(machine: Machine, wiring: VirtioWiring) -> None:
    """Add the virtio-scsi adapter if the config has CD-ROMs or SCSI disks."""
    from kvmlite.backends.block.cdrom import open_medium  # noqa: PLC0415
    from kvmlite.devices.scsi import ScsiCdrom, ScsiDisk, ScsiLun, ScsiTarget  # noqa: PLC0415
    from kvmlite.devices.virtio import ThreadPoolIoExecutor, VirtioScsi  # noqa: PLC0415

    config = machine.config
    disks = [(n, d) for n, d in enumerate(config.drives) if d.interface is DriveInterface.SCSI]
    if not config.cdroms and not disks:
        return
    units: list[tuple[str, ScsiLun]] = []
    for n, cd in enumerate(config.cdroms):
        medium = open_medium(cd.source)
        if medium is not None:
            machine.closers.append(medium.close)
        ident = cdrom_id(n, cd.id)
        units.append((ident, ScsiCdrom(medium, serial=f"KVMLITE-{ident}", name=ident)))
    for n, drive in disks:
        backend = open_drive(machine, drive)
        ident = drive_id(n, drive.id)
        units.append((ident, ScsiDisk(backend, serial=drive.serial or ident, name=ident)))
    executor = ThreadPoolIoExecutor(name="kvmlite-scsi")
    machine.closers.append(executor.close)
    assert executor.completion_fd is not None
    wiring.watch(executor.completion_fd, executor.run_completions)
    adapter = VirtioScsi(ScsiTarget({i: u for i, (_, u) in enumerate(units)}), executor=executor)
    wiring.add(SCSI_ADAPTER_ID, adapter)
    for ident, unit in units:
        machine.devices.add(ident, unit, transport=adapter, lock=unit.lock)

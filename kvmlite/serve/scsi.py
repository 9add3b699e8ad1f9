"""``kvmlite serve scsi``: virtio-scsi over vhost-user (QEMU ``-device vhost-user-scsi-pci``).

One target whose LUNs are, in order, the ``--cdrom`` drives (an ISO file,
a directory made into an ISO 9660 image, or ``''`` for an empty drive) and
then the DISK images (raw or qcow2, with the options of ``kvmlite run -d``:
``,ro``, ``,serial=S``, ``,format=F``). QEMU's vhost-user-scsi-pci answers
the guest's config-space reads itself; give it ``num_queues=`` equal to
``--num-queues`` and ``virtqueue_size=`` equal to ``--queue-size``.
"""

from __future__ import annotations

import argparse
import contextlib

from kvmlite.errors import ConfigError

#: QEMU's vhost-user-scsi-pci "virtqueue_size" default.
QEMU_VHOST_USER_SCSI_QUEUE_SIZE = 128


def cmd_scsi(a: argparse.Namespace) -> int:
    from kvmlite.backends.block import open_image  # noqa: PLC0415 - start-up time
    from kvmlite.backends.block.cdrom import open_medium  # noqa: PLC0415
    from kvmlite.config import DriveConfig  # noqa: PLC0415
    from kvmlite.devices.scsi import ScsiCdrom, ScsiDisk, ScsiLun, ScsiTarget  # noqa: PLC0415
    from kvmlite.devices.virtio import ThreadPoolIoExecutor, VirtioScsi  # noqa: PLC0415
    from kvmlite.serve import serve_device  # noqa: PLC0415

    if not a.cdrom and not a.disks:
        raise ConfigError("kvmlite serve scsi needs at least one --cdrom or DISK")
    with contextlib.ExitStack() as stack:
        units: list[ScsiLun] = []
        for i, spec in enumerate(a.cdrom):
            medium = open_medium(spec)
            if medium is not None:
                stack.callback(medium.close)
            units.append(ScsiCdrom(medium, serial=f"KVMLITE-CD{i}", name=f"cd{i}"))
        for i, spec in enumerate(a.disks):
            disk = DriveConfig.parse(spec)
            fmt = disk.format.value if disk.format else None
            image = open_image(str(disk.path), fmt, disk.read_only, disk.direct)
            stack.callback(image.close)
            units.append(ScsiDisk(image, serial=disk.serial or f"KVMLITE-SD{i}", name=f"sd{i}"))
        executor = ThreadPoolIoExecutor()
        stack.callback(executor.close)
        dev = VirtioScsi(
            ScsiTarget(dict(enumerate(units))),
            num_queues=a.num_queues,
            queue_size=a.queue_size,
            executor=executor,
        )
        assert executor.completion_fd is not None
        return serve_device(dev, a.socket, [(executor.completion_fd, executor.run_completions)])
    raise AssertionError("unreachable")


def add_parser(sub: argparse._SubParsersAction, queue_size: object) -> None:
    p = sub.add_parser("scsi", help="virtio-scsi: CD-ROM drives and disks on one target")
    p.add_argument("--socket", required=True, help="unix socket path to listen on")
    p.add_argument(
        "--cdrom",
        action="append",
        default=[],
        metavar="ISO|DIR|''",
        help="a CD-ROM drive (repeatable): an ISO image, a directory (made into an ISO"
        " 9660 image with Rock Ridge and Joliet) or '' for an empty drive",
    )
    p.add_argument(
        "disks",
        nargs="*",
        metavar="DISK[,ro][,serial=S][,format=F]",
        help="disk images after the CD-ROMs, one LUN each",
    )
    p.add_argument(
        "--queue-size",
        type=queue_size,
        default=QEMU_VHOST_USER_SCSI_QUEUE_SIZE,
        metavar="N",
        help="ring entries per queue; must equal QEMU's virtqueue_size= "
        f"(default {QEMU_VHOST_USER_SCSI_QUEUE_SIZE})",
    )
    p.add_argument(
        "--num-queues", type=int, default=1, metavar="N", help="request queues (QEMU num_queues=)"
    )
    p.set_defaults(func=cmd_scsi)

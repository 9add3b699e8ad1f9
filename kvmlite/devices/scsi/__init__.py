"""SCSI/MMC target models, independent of any transport (SPC-4, SBC-3, MMC-6).

``ScsiTarget`` routes commands to ``ScsiLun`` objects: ``ScsiCdrom`` (a
CD/DVD-ROM with a removable medium and the media API ``insert``/``eject``/
``open_tray``/``close_tray``, docs/cdrom.md) and ``ScsiDisk`` (an SBC disk
over a block backend). virtio-scsi (kvmlite/devices/virtio/scsi.py) and the
vhost-user-scsi back-end are the transports that use them.
"""

from kvmlite.devices.scsi.cdb import CdbError, parse_cdb
from kvmlite.devices.scsi.cdrom import CdromState, ScsiCdrom, TrayLocked
from kvmlite.devices.scsi.disk import ScsiDisk
from kvmlite.devices.scsi.lun import LunState, ScsiLun, ScsiResult
from kvmlite.devices.scsi.sense import CHECK_CONDITION, GOOD, Sense
from kvmlite.devices.scsi.target import ScsiTarget, ScsiTargetState, decode_lun, encode_lun

__all__ = [
    "CHECK_CONDITION",
    "GOOD",
    "CdbError",
    "CdromState",
    "LunState",
    "ScsiCdrom",
    "ScsiDisk",
    "ScsiLun",
    "ScsiResult",
    "ScsiTarget",
    "ScsiTargetState",
    "Sense",
    "TrayLocked",
    "decode_lun",
    "encode_lun",
    "parse_cdb",
]

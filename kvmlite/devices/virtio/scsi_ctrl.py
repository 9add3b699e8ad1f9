"""The virtio-scsi control queue (virtio 1.2 §5.6.6.2): task management and notifications.

Commands complete before their completion is queued and kvmlite keeps no
task set beyond the in-flight chains, so every task management function
finds nothing left to abort: ABORT TASK (SET), CLEAR TASK SET, CLEAR ACA
and I_T NEXUS RESET answer FUNCTION COMPLETE, the QUERY functions FUNCTION
COMPLETE ("no such task"), LOGICAL UNIT RESET also raises the unit
attention SAM-5 asks for (29/00). Asynchronous notification (AN_QUERY,
AN_SUBSCRIBE) supports the media change class on CD-ROM LUNs.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from kvmlite.devices.scsi.sense import SENSE_POWER_ON_RESET
from kvmlite.devices.virtio.blk import slice_views
from kvmlite.devices.virtio.queue import ChainError, DescriptorChain
from kvmlite.devices.virtio.scsi_spec import (
    CTRL_AN,
    CTRL_AN_RESP,
    CTRL_TMF,
    VIRTIO_SCSI_S_BAD_TARGET,
    VIRTIO_SCSI_S_FAILURE,
    VIRTIO_SCSI_S_FUNCTION_COMPLETE,
    VIRTIO_SCSI_S_FUNCTION_REJECTED,
    VIRTIO_SCSI_S_INCORRECT_LUN,
    VIRTIO_SCSI_S_OK,
    VIRTIO_SCSI_T_AN_QUERY,
    VIRTIO_SCSI_T_AN_SUBSCRIBE,
    VIRTIO_SCSI_T_TMF,
    VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET,
    VIRTIO_SCSI_T_TMF_QUERY_TASK_SET,
)

if TYPE_CHECKING:
    from kvmlite.devices.virtio.scsi import VirtioScsi


def handle_control(dev: VirtioScsi, chain: DescriptorChain) -> None:
    """Answer one control request; a chain with no writable byte is a device error."""
    mem = dev.memory
    assert mem is not None
    writable = [d for d in chain.writable if d.length]
    if not writable:
        raise ChainError(chain.head, "control request has no writable response")
    req = b"".join(bytes(v) for v in slice_views(mem, chain.readable, 0, CTRL_TMF.size))
    reply = _reply(dev, req)
    n = chain.write_all(mem, reply)
    dev.complete(0, chain.head, n)


def _reply(dev: VirtioScsi, req: bytes) -> bytes:
    if len(req) < 4:
        return bytes([VIRTIO_SCSI_S_FAILURE])
    (rtype,) = struct.unpack_from("<I", req)
    if rtype == VIRTIO_SCSI_T_TMF:
        if len(req) < CTRL_TMF.size:
            return bytes([VIRTIO_SCSI_S_FAILURE])
        _, subtype, lun, _tag = CTRL_TMF.unpack(req)
        return bytes([_tmf(dev, subtype, lun)])
    if rtype in (VIRTIO_SCSI_T_AN_QUERY, VIRTIO_SCSI_T_AN_SUBSCRIBE):
        if len(req) < CTRL_AN.size:
            return CTRL_AN_RESP.pack(0, VIRTIO_SCSI_S_FAILURE)
        _, lun, requested = CTRL_AN.unpack_from(req)
        ours, n = dev.resolve_lun(lun)
        if not ours:
            return CTRL_AN_RESP.pack(0, VIRTIO_SCSI_S_BAD_TARGET)
        if n is None or n not in dev.target.luns:
            return CTRL_AN_RESP.pack(0, VIRTIO_SCSI_S_INCORRECT_LUN)
        supported = dev.supported_notifications(n)
        if rtype == VIRTIO_SCSI_T_AN_QUERY:
            return CTRL_AN_RESP.pack(supported, VIRTIO_SCSI_S_OK)
        dev.subscriptions[n] = requested & supported
        return CTRL_AN_RESP.pack(requested & supported, VIRTIO_SCSI_S_OK)
    return bytes([VIRTIO_SCSI_S_FAILURE])


def _tmf(dev: VirtioScsi, subtype: int, lun: bytes) -> int:
    ours, n = dev.resolve_lun(lun)
    if not ours:
        return VIRTIO_SCSI_S_BAD_TARGET
    unit = dev.target.luns.get(n) if n is not None else None
    if unit is None:
        return VIRTIO_SCSI_S_INCORRECT_LUN
    if subtype > VIRTIO_SCSI_T_TMF_QUERY_TASK_SET:
        return VIRTIO_SCSI_S_FUNCTION_REJECTED
    if subtype == VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET:
        with unit.lock:
            unit.unit_attention = SENSE_POWER_ON_RESET
    return VIRTIO_SCSI_S_FUNCTION_COMPLETE

"""Constants and layouts of virtio-scsi (virtio 1.2 §5.6, include/uapi/linux/virtio_scsi.h)."""

from __future__ import annotations

import ctypes
import struct

VIRTIO_ID_SCSI = 8

# §5.6.2 virtqueues
CONTROL_QUEUE = 0
EVENT_QUEUE = 1
FIRST_REQUEST_QUEUE = 2

# §5.6.3 feature bits
VIRTIO_SCSI_F_INOUT = 0
VIRTIO_SCSI_F_HOTPLUG = 1
VIRTIO_SCSI_F_CHANGE = 2
VIRTIO_SCSI_F_T10_PI = 3

# §5.6.4 defaults the driver may change
VIRTIO_SCSI_CDB_SIZE = 32
VIRTIO_SCSI_SENSE_SIZE = 96

# §5.6.6.1 response codes
VIRTIO_SCSI_S_OK = 0
VIRTIO_SCSI_S_FUNCTION_COMPLETE = 0
VIRTIO_SCSI_S_OVERRUN = 1
VIRTIO_SCSI_S_ABORTED = 2
VIRTIO_SCSI_S_BAD_TARGET = 3
VIRTIO_SCSI_S_RESET = 4
VIRTIO_SCSI_S_BUSY = 5
VIRTIO_SCSI_S_TRANSPORT_FAILURE = 6
VIRTIO_SCSI_S_TARGET_FAILURE = 7
VIRTIO_SCSI_S_NEXUS_FAILURE = 8
VIRTIO_SCSI_S_FAILURE = 9
VIRTIO_SCSI_S_FUNCTION_SUCCEEDED = 10
VIRTIO_SCSI_S_FUNCTION_REJECTED = 11
VIRTIO_SCSI_S_INCORRECT_LUN = 12

# §5.6.6.2 control queue request types and task management functions
VIRTIO_SCSI_T_TMF = 0
VIRTIO_SCSI_T_AN_QUERY = 1
VIRTIO_SCSI_T_AN_SUBSCRIBE = 2
VIRTIO_SCSI_T_TMF_ABORT_TASK = 0
VIRTIO_SCSI_T_TMF_ABORT_TASK_SET = 1
VIRTIO_SCSI_T_TMF_CLEAR_ACA = 2
VIRTIO_SCSI_T_TMF_CLEAR_TASK_SET = 3
VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET = 4
VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET = 5
VIRTIO_SCSI_T_TMF_QUERY_TASK = 6
VIRTIO_SCSI_T_TMF_QUERY_TASK_SET = 7

# §5.6.6.3 events
VIRTIO_SCSI_T_NO_EVENT = 0
VIRTIO_SCSI_T_TRANSPORT_RESET = 1
VIRTIO_SCSI_T_ASYNC_NOTIFY = 2
VIRTIO_SCSI_T_PARAM_CHANGE = 3
VIRTIO_SCSI_T_EVENTS_MISSED = 0x80000000
VIRTIO_SCSI_EVT_RESET_HARD = 0
VIRTIO_SCSI_EVT_RESET_RESCAN = 1
VIRTIO_SCSI_EVT_RESET_REMOVED = 2
# asynchronous notification event classes (SCSI MMC GESN classes, as a bit mask)
VIRTIO_SCSI_EVT_ASYNC_OPERATIONAL_CHANGE = 2
VIRTIO_SCSI_EVT_ASYNC_POWER_MGMT = 4
VIRTIO_SCSI_EVT_ASYNC_EXTERNAL_REQUEST = 8
VIRTIO_SCSI_EVT_ASYNC_MEDIA_CHANGE = 16
VIRTIO_SCSI_EVT_ASYNC_MULTI_HOST = 32
VIRTIO_SCSI_EVT_ASYNC_DEVICE_BUSY = 64

#: struct virtio_scsi_req_cmd up to the CDB: lun[8], id, task_attr, prio, crn
CMD_REQ_HEAD = struct.Struct("<8sQBBB")
#: struct virtio_scsi_resp_cmd up to the sense: sense_len, residual, status_qualifier,
#: status, response
CMD_RESP_HEAD = struct.Struct("<IIHBB")
#: struct virtio_scsi_ctrl_tmf: type, subtype, lun[8], id (+ u8 response, writable)
CTRL_TMF = struct.Struct("<II8sQ")
#: struct virtio_scsi_ctrl_an: type, lun[8], event_requested (+ le32 event_actual, u8 response)
CTRL_AN = struct.Struct("<I8sI")
CTRL_AN_RESP = struct.Struct("<IB")
#: struct virtio_scsi_event: event, lun[8], reason
EVENT = struct.Struct("<I8sI")


class VirtioScsiConfig(ctypes.LittleEndianStructure):
    """struct virtio_scsi_config (§5.6.4)."""

    _pack_ = 1
    _fields_ = [
        ("num_queues", ctypes.c_uint32),
        ("seg_max", ctypes.c_uint32),
        ("max_sectors", ctypes.c_uint32),
        ("cmd_per_lun", ctypes.c_uint32),
        ("event_info_size", ctypes.c_uint32),
        ("sense_size", ctypes.c_uint32),
        ("cdb_size", ctypes.c_uint32),
        ("max_channel", ctypes.c_uint16),
        ("max_target", ctypes.c_uint16),
        ("max_lun", ctypes.c_uint32),
    ]


def virtio_lun(target: int, lun: int) -> bytes:
    """The 8-byte lun field a driver sends (§5.6.6.1): 1, target, flat-space LUN."""
    return bytes([1, target, 0x40 | lun >> 8, lun & 0xFF, 0, 0, 0, 0])

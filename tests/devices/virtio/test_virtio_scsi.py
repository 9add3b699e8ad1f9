"""virtio-scsi driven through MockDriver: requests, control queue, events, state, fuzzing."""

from __future__ import annotations

import ctypes
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from virtio_fakes import MemBlockBackend

from kvmlite.devices.scsi import ScsiCdrom, ScsiDisk, ScsiTarget, Sense
from kvmlite.devices.virtio.executor import ThreadPoolIoExecutor
from kvmlite.devices.virtio.queue import VirtQueue
from kvmlite.devices.virtio.scsi import VirtioScsi, VirtioScsiState
from kvmlite.devices.virtio.scsi_spec import (
    CMD_RESP_HEAD,
    EVENT,
    VIRTIO_SCSI_EVT_ASYNC_MEDIA_CHANGE,
    VIRTIO_SCSI_EVT_RESET_RESCAN,
    VIRTIO_SCSI_F_CHANGE,
    VIRTIO_SCSI_S_BAD_TARGET,
    VIRTIO_SCSI_S_FAILURE,
    VIRTIO_SCSI_S_FUNCTION_COMPLETE,
    VIRTIO_SCSI_S_INCORRECT_LUN,
    VIRTIO_SCSI_S_OK,
    VIRTIO_SCSI_S_OVERRUN,
    VIRTIO_SCSI_T_AN_SUBSCRIBE,
    VIRTIO_SCSI_T_ASYNC_NOTIFY,
    VIRTIO_SCSI_T_EVENTS_MISSED,
    VIRTIO_SCSI_T_PARAM_CHANGE,
    VIRTIO_SCSI_T_TMF,
    VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET,
    VIRTIO_SCSI_T_TRANSPORT_RESET,
    VirtioScsiConfig,
    virtio_lun,
)
from kvmlite.devices.virtio.spec import VIRTIO_F_VERSION_1, bit
from kvmlite.errors import ConfigError
from kvmlite.state import dumps, loads
from kvmlite.testing import MockDriver, RecordingInterrupt, attach_drivers, bytearray_memory

RESP = CMD_RESP_HEAD.size + 96  # response header + default sense size


def iso(blocks: int) -> MemBlockBackend:
    b = MemBlockBackend(blocks * 2048, read_only=True)
    for i in range(blocks):
        b.data[i * 2048 : i * 2048 + 4] = struct.pack(">I", i)
    return b


def make(**kw: object) -> tuple[VirtioScsi, list[MockDriver], MemBlockBackend]:
    disk = MemBlockBackend(1 << 20)
    target = ScsiTarget({0: ScsiCdrom(iso(64)), 1: ScsiDisk(disk)})
    dev = VirtioScsi(target, **kw)  # type: ignore[arg-type]
    drivers, _, _ = attach_drivers(dev, bytearray_memory(4 << 20), queue_size=32)
    return dev, drivers, disk


def request(lun: int, cdb: bytes, target: int = 0) -> bytes:
    return virtio_lun(target, lun) + struct.pack("<QBBB", 7, 0, 0, 0) + cdb.ljust(32, b"\0")


def command(drv: MockDriver, lun: int, cdb: bytes, in_len: int = 0, out: bytes = b"", **kw: int):
    readable = [request(lun, cdb, **kw)] + ([out] if out else [])
    drv.add_chain(readable, [RESP] + ([in_len] if in_len else []))
    drv.kick()
    [u] = drv.get_used()
    sense_len, resid, _, status, response = CMD_RESP_HEAD.unpack_from(u.written)
    sense = u.written[CMD_RESP_HEAD.size : CMD_RESP_HEAD.size + sense_len]
    return response, status, sense, resid, u.written[RESP:], u.length


def test_config_layout() -> None:
    assert ctypes.sizeof(VirtioScsiConfig) == 36
    assert VirtioScsiConfig.max_target.offset == 30
    dev = VirtioScsi(ScsiTarget({}), num_queues=2, queue_size=64)
    cfg = VirtioScsiConfig.from_buffer_copy(dev.read_config(0, 36))
    assert (cfg.num_queues, cfg.seg_max, cfg.sense_size, cfg.cdb_size) == (2, 62, 96, 32)
    assert (cfg.max_channel, cfg.max_target, cfg.max_lun, cfg.event_info_size) == (0, 0, 16383, 16)
    dev.write_config(20, struct.pack("<I", 32))
    assert VirtioScsiConfig.from_buffer_copy(dev.read_config(0, 36)).sense_size == 32
    assert dev.num_queues == 4 and dev.avail_features & bit(VIRTIO_F_VERSION_1)
    with pytest.raises(ConfigError):
        VirtioScsi(ScsiTarget({}), num_queues=0)


def test_inquiry_read_and_write() -> None:
    dev, drivers, disk = make()
    req = drivers[2]
    response, status, sense, resid, data, used = command(req, 0, b"\x12\x00\x00\x00\x24\x00", 96)
    assert (response, status, resid) == (VIRTIO_SCSI_S_OK, 0, 60)
    assert data[0] == 0x05 and data[8:15] == b"KVMLITE" and used == RESP + 36
    read10 = struct.pack(">BBIBHB", 0x28, 0, 5, 0, 2, 0)
    response, status, _, resid, data, _ = command(req, 0, read10, 4096)
    assert (response, status, resid) == (0, 0, 0)
    assert data[:4] == struct.pack(">I", 5) and data[2048:2052] == struct.pack(">I", 6)
    write10 = struct.pack(">BBIBHB", 0x2A, 0, 3, 0, 1, 0)
    response, status, *_ = command(req, 1, write10, out=b"z" * 512)
    assert (response, status) == (0, 0) and disk.data[1536:2048] == b"z" * 512


def test_errors_are_answered() -> None:
    dev, drivers, _ = make()
    req = drivers[2]
    response, status, sense, *_ = command(req, 0, b"\x00" * 6, target=3)
    assert response == VIRTIO_SCSI_S_BAD_TARGET
    response, status, sense, *_ = command(req, 9, b"\x00" * 6)
    assert (response, status) == (VIRTIO_SCSI_S_OK, 2)
    assert Sense.parse(sense) == Sense(0x5, 0x25, 0)
    response, *_ = command(req, 0, struct.pack(">BBIBHB", 0x28, 0, 0, 0, 4, 0), 2048)
    assert response == VIRTIO_SCSI_S_OVERRUN
    req.add_chain([b"short"], [RESP])  # header shorter than lun + id + cdb
    req.kick()
    [u] = req.get_used()
    assert CMD_RESP_HEAD.unpack_from(u.written)[4] == VIRTIO_SCSI_S_FAILURE
    req.add_chain([request(1, b"\x2a" + bytes(9)), b"x"], [RESP, 512])  # data both ways
    req.kick()
    assert CMD_RESP_HEAD.unpack_from(req.get_used()[0].written)[4] == VIRTIO_SCSI_S_FAILURE
    assert not dev.broken
    req.add_chain([request(0, bytes(6))], [4])  # no room for a response: device error
    req.kick()
    assert dev.broken


def test_control_queue() -> None:
    dev, drivers, _ = make()
    ctrl = drivers[0]

    def tmf(subtype: int, lun: bytes) -> int:
        ctrl.add_chain([struct.pack("<II8sQ", VIRTIO_SCSI_T_TMF, subtype, lun, 1)], [1])
        ctrl.kick()
        return ctrl.get_used()[0].written[0]

    assert tmf(0, virtio_lun(0, 0)) == VIRTIO_SCSI_S_FUNCTION_COMPLETE
    assert tmf(0, virtio_lun(1, 0)) == VIRTIO_SCSI_S_BAD_TARGET
    assert tmf(0, virtio_lun(0, 5)) == VIRTIO_SCSI_S_INCORRECT_LUN
    assert tmf(VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET, virtio_lun(0, 1)) == 0
    _, status, sense, *_ = command(drivers[2], 1, bytes(6))
    assert status == 2 and Sense.parse(sense) == Sense(0x6, 0x29, 0)
    ctrl.add_chain([struct.pack("<I8sI", VIRTIO_SCSI_T_AN_SUBSCRIBE, virtio_lun(0, 0), 0xFF)], [5])
    ctrl.kick()
    assert struct.unpack("<IB", ctrl.get_used()[0].written) == (16, VIRTIO_SCSI_S_OK)
    ctrl.add_chain([struct.pack("<I", 99)], [1])
    ctrl.kick()
    assert ctrl.get_used()[0].written == bytes([VIRTIO_SCSI_S_FAILURE])


def events(drv: MockDriver) -> list[tuple[int, bytes, int]]:
    drv.kick()
    return [EVENT.unpack(u.written) for u in drv.get_used()]


def test_media_change_events() -> None:
    dev, drivers, _ = make()
    ctrl, evq = drivers[0], drivers[1]
    ctrl.add_chain([struct.pack("<I8sI", VIRTIO_SCSI_T_AN_SUBSCRIBE, virtio_lun(0, 0), 16)], [5])
    ctrl.kick()
    ctrl.get_used()
    cd = dev.target.luns[0]
    assert isinstance(cd, ScsiCdrom)
    cd.eject()  # no event buffers yet: the events wait
    for _ in range(4):
        evq.add_chain([], [16])
    got = events(evq)
    assert got == [
        (VIRTIO_SCSI_T_PARAM_CHANGE, virtio_lun(0, 0), 0x3A),
        (VIRTIO_SCSI_T_ASYNC_NOTIFY, virtio_lun(0, 0), VIRTIO_SCSI_EVT_ASYNC_MEDIA_CHANGE),
    ]
    cd.insert(iso(4))
    assert [e[2] for e in events(evq)] == [0x28, VIRTIO_SCSI_EVT_ASYNC_MEDIA_CHANGE]


def test_events_missed_and_hotplug() -> None:
    dev, drivers, _ = make(num_queues=1)
    evq = drivers[1]
    for _ in range(70):
        dev.post_event(VIRTIO_SCSI_T_PARAM_CHANGE, 1, 0x92A)
    for _ in range(20):
        evq.add_chain([], [16])
    got = events(evq)
    assert got[0][0] == VIRTIO_SCSI_T_PARAM_CHANGE | VIRTIO_SCSI_T_EVENTS_MISSED
    assert len(got) == 20
    dev.add_lun(2, ScsiDisk(MemBlockBackend(4096)))
    delivered = []
    while True:
        for _ in range(10):
            evq.add_chain([], [16])
        got = events(evq)
        delivered += got
        if len(got) < 10:
            break
    assert len(delivered) == 64 - 20 + 1
    last = delivered[-1]
    assert last == (VIRTIO_SCSI_T_TRANSPORT_RESET, virtio_lun(0, 2), VIRTIO_SCSI_EVT_RESET_RESCAN)
    assert command(drivers[2], 2, bytes(6))[1] == 0
    dev.remove_lun(2)
    assert command(drivers[2], 2, bytes(6))[1] == 2


def test_no_param_change_without_the_feature() -> None:
    disk = MemBlockBackend(4096)
    dev = VirtioScsi(ScsiTarget({0: ScsiCdrom(None), 1: ScsiDisk(disk)}))
    drivers, _, _ = attach_drivers(
        dev, bytearray_memory(2 << 20), features=dev.avail_features & ~bit(VIRTIO_SCSI_F_CHANGE)
    )
    drivers[1].add_chain([], [16])
    cd = dev.target.luns[0]
    assert isinstance(cd, ScsiCdrom)
    cd.insert(iso(2))
    assert events(drivers[1]) == []


def test_thread_pool_executor() -> None:
    executor = ThreadPoolIoExecutor(workers=2)
    try:
        dev, drivers, _ = make(executor=executor)
        req = drivers[2]
        req.add_chain([request(0, struct.pack(">BBIBHB", 0x28, 0, 9, 0, 1, 0))], [RESP, 2048])
        req.kick()
        assert dev.drain(5.0)
        executor.run_completions()
        [u] = req.get_used()
        assert u.written[RESP : RESP + 4] == struct.pack(">I", 9)
    finally:
        executor.close()


def test_state_round_trip_with_inflight_request() -> None:
    class Held:
        completion_fd = None

        def __init__(self) -> None:
            self.jobs: list = []

        def submit(self, job, completion) -> None:  # type: ignore[no-untyped-def]
            self.jobs.append((job, completion))

        def run_completions(self) -> int:
            return 0

        def wait_idle(self, timeout: float | None = None) -> bool:
            return True

    dev, drivers, _ = make(executor=Held())
    req = drivers[2]
    req.add_chain([request(0, struct.pack(">BBIBHB", 0x28, 0, 3, 0, 1, 0))], [RESP, 2048])
    req.kick()
    cd = dev.target.luns[0]
    assert isinstance(cd, ScsiCdrom)
    cd.set_unit_attention(Sense(0x6, 0x2A, 0x09))
    state = loads(VirtioScsiState, dumps(dev.save()))
    assert len(state.inflight) == 1 and state.pending_events
    qstates = [q.save() for q in dev.queues]

    target2 = ScsiTarget({0: ScsiCdrom(iso(64)), 1: ScsiDisk(MemBlockBackend(1 << 20))})
    dev2 = VirtioScsi.restore({"target": target2}, state)
    queues = [VirtQueue.restore({"max_size": q.max_size}, q) for q in qstates]
    irqs = [RecordingInterrupt() for _ in queues]
    assert dev.memory is not None
    dev2.activate(dev.memory, queues, irqs, RecordingInterrupt())
    [u] = req.get_used()  # the restored device re-ran the request
    # The saved unit attention came first: the read reports it.
    sense_len, _, _, status, response = CMD_RESP_HEAD.unpack_from(u.written)
    assert (response, status) == (0, 2)
    assert dev2.target.luns[0].unit_attention is None
    assert dev2.save().inflight == ()


@settings(max_examples=300, deadline=None)
@given(
    head=st.binary(max_size=60),
    out=st.binary(max_size=600),
    writable=st.lists(st.integers(0, 3000), max_size=3),
    queue=st.sampled_from([0, 1, 2]),
)
def test_fuzz_request_parser(head: bytes, out: bytes, writable: list[int], queue: int) -> None:
    dev, drivers, _ = make()
    drv = drivers[queue]
    readable = [head] + ([out] if out else [])
    drv.add_chain(readable if head or out else [b"\0"], writable)
    drv.kick()
    used = drv.get_used()
    if dev.broken:
        return  # answered with NEEDS_RESET: a chain that could not hold a response
    for u in used:
        assert u.length <= sum(writable)

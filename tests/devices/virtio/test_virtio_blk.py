"""virtio-blk driven through MockDriver: requests, guest errors, executor, state, fuzzing."""

from __future__ import annotations

import ctypes
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from virtio_fakes import MemBlockBackend

from kvmlite.backends.block.engines import ENGINES, open_engine
from kvmlite.devices.virtio.blk import (
    VIRTIO_BLK_F_DISCARD,
    VIRTIO_BLK_F_MQ,
    VIRTIO_BLK_F_RO,
    VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
    VirtioBlkConfig,
    VirtioBlock,
    VirtioBlockState,
)
from kvmlite.devices.virtio.executor import ThreadPoolIoExecutor
from kvmlite.devices.virtio.queue import VirtQueue
from kvmlite.devices.virtio.spec import VIRTIO_F_VERSION_1, VIRTQ_DESC_F_NEXT, bit
from kvmlite.errors import ConfigError
from kvmlite.memory import GuestMemory
from kvmlite.state import dumps, loads
from kvmlite.testing import MockDriver, RecordingInterrupt, attach_drivers, bytearray_memory

DISK = 1 << 20


def hdr(rtype: int, sector: int = 0) -> bytes:
    return struct.pack("<IIQ", rtype, 0, sector)


def make(**kw: object) -> tuple[VirtioBlock, MemBlockBackend, MockDriver, RecordingInterrupt]:
    backend = kw.pop("backend", None) or MemBlockBackend(DISK)
    dev = VirtioBlock(backend, **kw)  # type: ignore[arg-type]
    mem = bytearray_memory(2 << 20)
    drivers, irqs, _ = attach_drivers(dev, mem, queue_size=64)
    return dev, backend, drivers[0], irqs[0]


def submit(drv: MockDriver, readable: list[bytes], writable: list[int], **kw: object) -> list:
    drv.add_chain(readable, writable, **kw)  # type: ignore[arg-type]
    drv.kick()
    return drv.get_used()


def test_config_layout_and_features() -> None:
    assert ctypes.sizeof(VirtioBlkConfig) == 60
    assert VirtioBlkConfig.num_queues.offset == 34
    assert VirtioBlkConfig.max_discard_sectors.offset == 36
    assert VirtioBlkConfig.write_zeroes_may_unmap.offset == 56
    dev = VirtioBlock(MemBlockBackend(DISK), num_queues=2, block_size=4096)
    (cap,) = struct.unpack("<Q", dev.read_config(0, 8))
    assert cap == DISK // 512
    assert struct.unpack("<I", dev.read_config(20, 4)) == (4096,)
    assert struct.unpack("<H", dev.read_config(34, 2)) == (2,)
    assert dev.read_config(1000, 4) == bytes(4)
    assert dev.avail_features & bit(VIRTIO_BLK_F_MQ)
    assert dev.avail_features & bit(VIRTIO_F_VERSION_1)
    ro = VirtioBlock(MemBlockBackend(DISK, read_only=True))
    assert ro.avail_features & bit(VIRTIO_BLK_F_RO)
    assert not ro.avail_features & bit(VIRTIO_BLK_F_DISCARD)
    with pytest.raises(ConfigError, match="serial"):
        VirtioBlock(MemBlockBackend(DISK), serial="x" * 21)


@pytest.mark.parametrize("indirect", [False, True])
def test_write_then_read(indirect: bool) -> None:
    dev, backend, drv, irq = make()
    payload = bytes(range(256)) * 4
    [u] = submit(
        drv, [hdr(VIRTIO_BLK_T_OUT, 3), payload[:600], payload[600:]], [1], indirect=indirect
    )
    assert u.length == 1 and u.written == bytes([VIRTIO_BLK_S_OK])
    assert backend.data[3 * 512 : 3 * 512 + 1024] == payload
    [u] = submit(drv, [hdr(VIRTIO_BLK_T_IN, 3)], [512, 512, 1], indirect=indirect)
    assert u.length == 1025
    assert u.written == payload + bytes([VIRTIO_BLK_S_OK])
    assert irq.count == 2


def test_header_split_across_descriptors_and_status_in_data_buffer() -> None:
    dev, backend, drv, _ = make()
    backend.data[0:512] = b"\x11" * 512
    h = hdr(VIRTIO_BLK_T_IN, 0)
    [u] = submit(drv, [h[:5], h[5:]], [300, 213])
    assert u.length == 513 and u.written == b"\x11" * 512 + b"\x00"


def test_flush_get_id_discard_write_zeroes() -> None:
    dev, backend, drv, _ = make(serial="disk-serial-1")
    [u] = submit(drv, [hdr(VIRTIO_BLK_T_FLUSH)], [1])
    assert u.written == b"\x00" and backend.flushes == 1
    [u] = submit(drv, [hdr(VIRTIO_BLK_T_GET_ID)], [20, 1])
    assert u.written == b"disk-serial-1".ljust(20, b"\0") + b"\x00" and u.length == 21
    backend.data[:] = b"\xff" * DISK
    seg = struct.pack("<QII", 8, 16, 0)
    [u] = submit(drv, [hdr(VIRTIO_BLK_T_DISCARD), seg], [1])
    assert u.written == b"\x00" and backend.discards == [(4096, 8192)]
    seg = struct.pack("<QII", 100, 1, 1) + struct.pack("<QII", 200, 2, 0)
    [u] = submit(drv, [hdr(VIRTIO_BLK_T_WRITE_ZEROES), seg], [1])
    assert u.written == b"\x00"
    assert backend.zeroes == [(100 * 512, 512, True), (200 * 512, 1024, False)]
    assert backend.data[100 * 512 : 101 * 512] == bytes(512)


@pytest.mark.parametrize(
    "readable, writable, status",
    [
        ([hdr(99)], [1], VIRTIO_BLK_S_UNSUPP),
        ([hdr(VIRTIO_BLK_T_IN, DISK // 512)], [512, 1], VIRTIO_BLK_S_IOERR),
        ([hdr(VIRTIO_BLK_T_IN, 2**63)], [512, 1], VIRTIO_BLK_S_IOERR),
        ([hdr(VIRTIO_BLK_T_IN, 0)], [100, 1], VIRTIO_BLK_S_IOERR),
        ([hdr(VIRTIO_BLK_T_OUT, 0)[:10]], [1], VIRTIO_BLK_S_IOERR),
        ([hdr(VIRTIO_BLK_T_DISCARD), struct.pack("<QII", 0, 1, 1)], [1], VIRTIO_BLK_S_UNSUPP),
        ([hdr(VIRTIO_BLK_T_WRITE_ZEROES), struct.pack("<QII", 0, 1, 6)], [1], VIRTIO_BLK_S_UNSUPP),
        ([hdr(VIRTIO_BLK_T_DISCARD), b"short"], [1], VIRTIO_BLK_S_IOERR),
        ([hdr(VIRTIO_BLK_T_DISCARD)], [1], VIRTIO_BLK_S_IOERR),
        ([hdr(VIRTIO_BLK_T_DISCARD), struct.pack("<QII", 2**50, 1, 0)], [1], VIRTIO_BLK_S_IOERR),
    ],
)
def test_bad_requests_get_an_error_status(readable: list, writable: list, status: int) -> None:
    dev, backend, drv, _ = make()
    [u] = submit(drv, readable, writable)
    assert u.written[-1] == status
    assert not dev.broken


def test_read_only_and_backend_failure() -> None:
    dev, backend, drv, _ = make(backend=MemBlockBackend(DISK, read_only=True))
    [u] = submit(drv, [hdr(VIRTIO_BLK_T_OUT), bytes(512)], [1])
    assert u.written == bytes([VIRTIO_BLK_S_IOERR])
    [u] = submit(drv, [hdr(VIRTIO_BLK_T_WRITE_ZEROES), struct.pack("<QII", 0, 1, 0)], [1])
    assert u.written == bytes([VIRTIO_BLK_S_UNSUPP])
    dev, backend, drv, _ = make(backend=MemBlockBackend(DISK, fail=True))
    [u] = submit(drv, [hdr(VIRTIO_BLK_T_IN)], [512, 1])
    assert u.length == 1 and u.written[-1] == VIRTIO_BLK_S_IOERR


def test_chain_without_status_byte_sets_needs_reset() -> None:
    dev, backend, drv, _ = make()
    resets = []
    dev.needs_reset_handler = lambda: resets.append(1)
    [u] = submit(drv, [hdr(VIRTIO_BLK_T_FLUSH)], [])
    assert u.length == 0 and dev.broken and resets == [1]
    assert submit(drv, [hdr(VIRTIO_BLK_T_FLUSH)], [1]) == []  # stopped until reset
    dev.reset()
    assert not dev.broken


def test_malformed_chain_loop_is_returned_and_needs_reset() -> None:
    dev, backend, drv, _ = make()
    buf = drv.alloc(16)
    drv.write_descriptor(0, buf, 16, VIRTQ_DESC_F_NEXT, 0)
    drv._free.remove(0)
    drv.publish(0)
    drv.kick()
    assert [(u.head, u.length) for u in drv.get_used()] == [(0, 0)]
    assert dev.broken


def test_multiqueue() -> None:
    backend = MemBlockBackend(DISK)
    dev = VirtioBlock(backend, num_queues=3, queue_size=16)
    drivers, irqs, _ = attach_drivers(dev, bytearray_memory(2 << 20))
    for i, drv in enumerate(drivers):
        [u] = submit(drv, [hdr(VIRTIO_BLK_T_OUT, i), bytes([i + 1]) * 512], [1])
        assert u.written == b"\x00"
    assert [irq.count for irq in irqs] == [1, 1, 1]
    assert backend.data[1024:1536] == b"\x03" * 512


@pytest.mark.parametrize("aio", ENGINES)
def test_thread_pool_executor_and_inflight_state_round_trip(aio: str) -> None:
    ex = ThreadPoolIoExecutor(workers=2) if aio == "threads" else open_engine(aio)
    try:
        backend = MemBlockBackend(DISK)
        backend.data[0:512] = b"A" * 512
        dev = VirtioBlock(backend, executor=ex, queue_size=16)
        mem = bytearray_memory(1 << 20)
        [drv], _, _ = attach_drivers(dev, mem)
        sub = drv.add_chain([hdr(VIRTIO_BLK_T_IN, 0)], [512, 1])
        drv.kick()
        # Snapshot while the request may still be in flight.
        state = loads(VirtioBlockState, dumps(dev.save()))
        qstate = dev.queues[0].save()
        assert state.inflight == ((0, 0),)
        assert dev.drain(timeout=5)
        [u] = drv.get_used()
        assert u.written == b"A" * 512 + b"\x00"
        assert ex.completion_fd is not None
    finally:
        ex.close()
    # Rebuild the device on the same memory with the driver rewound to the
    # snapshot point: the in-flight request is re-submitted on activation.
    backend.data[0:512] = b"B" * 512
    dev2 = VirtioBlock.restore({"backend": backend, "queue_size": 16}, state)
    q = VirtQueue.restore({"max_size": 16}, qstate)
    mem.write_int(drv.used_ring + 2, 2, 0)
    drv.set_used_event(0)
    irq = RecordingInterrupt()
    dev2.activate(mem, [q], [irq], RecordingInterrupt())
    assert mem.read_int(drv.used_ring + 2, 2) == 1
    data_addr = sub.writable[0][0]
    assert mem.read(data_addr, 513) == b"B" * 512 + b"\x00"
    assert irq.count == 1


def test_reset_drops_late_completions() -> None:
    ex = ThreadPoolIoExecutor(workers=1)
    try:
        backend = MemBlockBackend(DISK)
        dev = VirtioBlock(backend, executor=ex, queue_size=16)
        mem = bytearray_memory(1 << 20)
        [drv], irqs, _ = attach_drivers(dev, mem)
        drv.add_chain([hdr(VIRTIO_BLK_T_IN, 0)], [512, 1])
        drv.kick()
        dev.reset()
        time.sleep(0.05)
        ex.wait_idle(5)
        assert drv.used_idx == 0 and irqs[0].count == 0
    finally:
        ex.close()


# -- fuzzing -------------------------------------------------------------------------

GUARD = 4096


@settings(max_examples=150, deadline=None)
@given(
    rtype=st.sampled_from([0, 1, 4, 8, 11, 13, 2, 99]),
    sector=st.one_of(st.integers(0, 2100), st.integers(0, 2**64 - 1)),
    payload=st.binary(max_size=2048),
    extra=st.binary(max_size=64),
    writable=st.lists(st.integers(0, 1100), max_size=4),
    split=st.integers(0, 16),
    indirect=st.booleans(),
)
def test_fuzz_requests(
    rtype: int,
    sector: int,
    payload: bytes,
    extra: bytes,
    writable: list[int],
    split: int,
    indirect: bool,
) -> None:
    buf = bytearray(b"\xc3") * ((1 << 20) + 2 * GUARD)
    mem = GuestMemory.from_buffer(memoryview(buf)[GUARD:-GUARD], 0x100000)
    mem.fill(0x100000, 1 << 20)
    backend = MemBlockBackend(DISK)
    dev = VirtioBlock(backend, queue_size=16)
    [drv], _, _ = attach_drivers(dev, mem)
    h = hdr(rtype, sector) + extra
    readable = [h[:split], h[split:], payload] if split else [h, payload]
    try:
        drv.add_chain([r for r in readable if r] or [b"x"], writable, indirect=indirect)
    except ValueError:
        return
    drv.kick()
    used = drv.get_used()
    assert len(used) == 1
    if not dev.broken:
        assert used[0].written[-1] in (VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP)
    assert buf[:GUARD] == b"\xc3" * GUARD and buf[-GUARD:] == b"\xc3" * GUARD
    assert len(backend.data) == DISK


@pytest.mark.parametrize("aio", ENGINES)
def test_thread_pool_many_concurrent_requests(aio: str) -> None:
    ex = ThreadPoolIoExecutor(workers=4) if aio == "threads" else open_engine(aio)
    try:
        backend = MemBlockBackend(DISK)
        for s in range(64):
            backend.data[s * 512 : (s + 1) * 512] = bytes([s]) * 512
        dev = VirtioBlock(backend, executor=ex, queue_size=128)
        [drv], irqs, _ = attach_drivers(dev, bytearray_memory(2 << 20))
        heads = {}
        for s in range(64):
            heads[drv.add_chain([hdr(VIRTIO_BLK_T_IN, s)], [512, 1], indirect=True).head] = s
        drv.kick()
        assert dev.drain(timeout=10)
        used = drv.get_used()
        assert len(used) == 64 and not dev.inflight
        for u in used:
            s = heads[u.head]
            assert u.written == bytes([s]) * 512 + b"\x00"
        assert irqs[0].count >= 1
    finally:
        ex.close()


class _TwiceExecutor:
    """An executor with a bug: it runs every completion twice."""

    completion_fd = None

    def submit(self, job, completion) -> None:  # noqa: ANN001
        result = job()
        completion(result)
        completion(result)

    def run_completions(self) -> int:
        return 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        return True


def test_a_second_completion_of_a_request_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    dev, backend, drv, irq = make(executor=_TwiceExecutor())
    backend.data[:512] = b"Q" * 512
    [u] = submit(drv, [hdr(VIRTIO_BLK_T_IN, 0)], [512, 1])
    assert u.written == b"Q" * 512 + b"\x00"
    assert drv.used_idx == 1 and irq.count == 1
    assert "second completion" in caplog.text

"""The vhost-user back-end serving VirtioBlock to an in-test Python front-end."""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
from pathlib import Path

import pytest

from kvmlite.backends.block.engines import ENGINES
from kvmlite.devices.virtio import VirtioRng
from kvmlite.devices.virtio.spec import VIRTIO_F_EVENT_IDX
from kvmlite.testing import MockDriver
from kvmlite.vhost_user import backend as backend_module
from kvmlite.vhost_user import protocol as p
from kvmlite.vhost_user.backend import VhostUserBackend
from kvmlite.vhost_user.protocol import Request

from .conftest import DISK_SIZE, Served
from .frontend import USER_BASE, Frontend

VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT = 0, 1


@pytest.fixture
def frontends() -> list[Frontend]:
    made: list[Frontend] = []
    yield made
    for f in made:
        f.close()


def connect(served: Served, made: list[Frontend], **kw: int) -> Frontend:
    f = Frontend(served.path, **kw)
    made.append(f)
    return f


def start_blk(f: Frontend) -> MockDriver:
    features = f.negotiate()
    assert f.set_mem_table() == 0
    drv = MockDriver(f.memory, 64, event_idx=bool(features & (1 << VIRTIO_F_EVENT_IDX)))
    assert f.setup_ring(0, drv) == 0
    return drv


def do_request(f: Frontend, drv: MockDriver, readable: list[bytes], writable: list[int]):
    drv.add_chain(readable, writable)
    drv.kick()
    for _ in range(50):
        used = drv.get_used()
        if used:
            return used[0]
        f.wait_call(0, 0.1)
    raise AssertionError("the back-end never completed the request")


@pytest.mark.parametrize("blk_engine", ENGINES, indirect=True)
def test_blk_reads_and_writes_the_image(blk: tuple[Served, Path], frontends: list) -> None:
    served, image = blk
    pattern = bytes(range(256)) * 2
    with open(image, "r+b") as fh:
        fh.seek(3 * 512)
        fh.write(pattern)
    f = connect(served, frontends)
    drv = start_blk(f)

    used = do_request(f, drv, [struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 3)], [512, 1])
    assert used.length == 513 and used.written == pattern + b"\x00"

    data = os.urandom(1024)
    used = do_request(f, drv, [struct.pack("<IIQ", VIRTIO_BLK_T_OUT, 0, 7), data], [1])
    assert used.written == b"\x00"
    assert image.read_bytes()[7 * 512 : 9 * 512] == data

    # The interrupt really went through the call eventfd (event_idx permitting).
    assert served.backend.device.activated


def test_config_and_queue_num(blk: tuple[Served, Path], frontends: list) -> None:
    served, _ = blk
    f = connect(served, frontends)
    f.negotiate()
    assert f.call_u64(Request.GET_QUEUE_NUM) == 1
    f.send(Request.GET_CONFIG, p.config_space(0, bytes(8)))
    reply = f.recv_reply(Request.GET_CONFIG)
    assert reply[:12] == bytes(p.VhostConfigHeader(0, 8, 0))
    assert int.from_bytes(reply[12:], "little") == DISK_SIZE // 512  # capacity in sectors


def test_get_vring_base_stops_the_ring(blk: tuple[Served, Path], frontends: list) -> None:
    served, _ = blk
    f = connect(served, frontends)
    drv = start_blk(f)
    for _ in range(3):
        do_request(f, drv, [struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0)], [512, 1])
    f.send(Request.GET_VRING_BASE, p.vring_state(0, 0))
    assert f.recv_reply(Request.GET_VRING_BASE) == p.vring_state(0, 3)
    assert not served.backend.device.activated  # every ring stopped: device reset
    # A chain added now is not served until the ring is started again.
    with contextlib.suppress(BlockingIOError):
        os.eventfd_read(f.call[0])  # an interrupt of the requests above
    drv.add_chain([struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0)], [512, 1])
    drv.kick(force=True)
    assert not f.wait_call(0, 0.3) and drv.get_used() == []
    kick = os.eventfd(0, os.EFD_NONBLOCK)
    f.fds.append(kick)
    f.send(Request.SET_FEATURES, p.u64(f.call_u64(Request.GET_FEATURES)))
    assert f.ack(Request.SET_VRING_BASE, p.vring_state(0, 3)) == 0
    call = os.eventfd(0, os.EFD_NONBLOCK)
    f.fds.append(call)
    f.call[0] = call
    assert f.ack(Request.SET_VRING_CALL, p.u64(0), [call]) == 0
    drv.notify = lambda: os.eventfd_write(kick, 1)
    assert f.ack(Request.SET_VRING_KICK, p.u64(0), [kick]) == 0
    assert f.wait_call(0, 5)
    assert len(drv.get_used()) == 1


def test_ring_outside_memory_is_refused(
    blk: tuple[Served, Path], frontends: list, caplog: pytest.LogCaptureFixture
) -> None:
    served, _ = blk
    f = connect(served, frontends)
    f.negotiate()
    assert f.set_mem_table() == 0
    drv = MockDriver(f.memory, 64)
    # The rings sit at user addresses past the end of the only region.
    drv.desc_table += f.ram_size
    drv.avail_ring += f.ram_size
    drv.used_ring += f.ram_size
    with caplog.at_level(logging.ERROR, "kvmlite.vhost_user"):
        assert f.setup_ring(0, drv) == 1
    assert "not inside any memory region" in caplog.text
    # Straddling the end of the region is refused too.
    drv2 = MockDriver(f.memory, 64)
    drv2.used_ring = f.ram_size - 256  # needs 6 + 8 * 64 bytes
    assert f.setup_ring(0, drv2) == 1
    # The connection is still usable, and a correct ring works.
    drv3 = MockDriver(f.memory, 64)
    assert f.setup_ring(0, drv3) == 0
    used = do_request(f, drv3, [struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0)], [512, 1])
    assert used.length == 513


def test_ring_outside_memory_without_reply_ack_closes(
    blk: tuple[Served, Path], frontends: list
) -> None:
    served, _ = blk
    f = connect(served, frontends)
    f.negotiate(protocol_features=0)
    f.send(
        Request.SET_MEM_TABLE, p.mem_table([p.MemoryRegion(0, f.ram_size, 0x1000, 0)]), [f.memfd]
    )
    f.send(Request.SET_VRING_NUM, p.vring_state(0, 64))
    f.send(Request.SET_VRING_ADDR, p.vring_addr(0, 0x10_0000_0000, 0x10_0000_1000, 0x10_0000_2000))
    assert f.closed_by_backend()
    check_next_frontend_works(served, frontends)


def check_next_frontend_works(served: Served, frontends: list) -> None:
    f = connect(served, frontends)
    drv = start_blk(f)
    used = do_request(f, drv, [struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0)], [512, 1])
    assert used.length == 513


@pytest.mark.parametrize(
    "message",
    [
        p.encode(Request.SET_FEATURES, b"\x00" * 4),  # wrong size
        p.encode(Request.SET_VRING_NUM, b"\x00" * 9),
        p.encode(999),  # unknown request
        p.encode(Request.SET_LOG_FD),  # not supported
        bytes(p.VhostUserHeader(Request.GET_FEATURES, 2, 0)),  # version 2
        bytes(p.VhostUserHeader(Request.SET_FEATURES, 1, 100)) + b"\x00" * 10,  # truncated
        p.encode(Request.SET_VRING_KICK, p.u64(0)),  # kick without an fd
        p.encode(Request.SET_VRING_NUM, p.vring_state(5, 64)),  # no such queue
        p.encode(Request.SET_VRING_NUM, p.vring_state(0, 100)),  # not a power of two
        p.encode(Request.SET_FEATURES, p.u64(1 << 60)),  # not offered
        p.encode(Request.SET_VRING_KICK, p.u64(0x100)),  # polling mode
    ],
)
def test_malformed_message_closes_and_backend_survives(
    blk: tuple[Served, Path], frontends: list, message: bytes
) -> None:
    served, _ = blk
    f = connect(served, frontends)
    f.sock.sendall(message)
    if message.endswith(b"\x00" * 10):
        f.sock.shutdown(1)  # the truncated message ends at EOF
    assert f.closed_by_backend()
    check_next_frontend_works(served, frontends)


def test_extra_fds_are_refused(blk: tuple[Served, Path], frontends: list) -> None:
    served, _ = blk
    f = connect(served, frontends)
    r, w = os.pipe()
    f.fds += [r, w]
    f.send(Request.GET_FEATURES, b"", [r, w])
    assert f.closed_by_backend()
    check_next_frontend_works(served, frontends)


def test_unmappable_memory_fd(blk: tuple[Served, Path], frontends: list) -> None:
    served, _ = blk
    f = connect(served, frontends)
    f.negotiate()
    r, w = os.pipe()
    f.fds += [r, w]
    table = p.mem_table([p.MemoryRegion(0, f.ram_size, 0x1000, 0)])
    assert f.ack(Request.SET_MEM_TABLE, table, [r]) == 1
    # A region past the end of the memfd is refused too.
    table = p.mem_table([p.MemoryRegion(0, f.ram_size, 0x1000, f.ram_size)])
    assert f.ack(Request.SET_MEM_TABLE, table, [f.memfd]) == 1
    drv = MockDriver(f.memory, 64)
    assert f.setup_ring(0, drv) == 1  # SET_VRING_ADDR without a memory table


def test_frontend_dies_mid_io_and_a_new_one_connects(
    blk: tuple[Served, Path], frontends: list
) -> None:
    served, image = blk
    f = connect(served, frontends)
    drv = start_blk(f)
    data = b"\x5a" * 4096
    for i in range(8):
        drv.add_chain([struct.pack("<IIQ", VIRTIO_BLK_T_OUT, 0, 8 * i), data], [1])
    drv.kick()
    f.sock.close()  # gone without a word, requests maybe in flight
    check_next_frontend_works(served, frontends)
    assert served.backend.connections == 2
    # Whatever was written is whole requests of the pattern; the rest is zeros.
    disk = image.read_bytes()
    for i in range(8):
        assert disk[8 * i * 512 : (8 * i + 8) * 512] in (data, bytes(4096))


def test_device_reset_failing_at_disconnect_still_serves_the_next(
    blk: tuple[Served, Path], frontends: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, _ = blk
    device = served.backend.device
    real_reset = device.reset
    failed: list[bool] = []

    def reset_once() -> None:
        if not failed:
            failed.append(True)
            raise RuntimeError("device reset bug")
        real_reset()

    monkeypatch.setattr(device, "reset", reset_once)
    f = connect(served, frontends)
    start_blk(f)
    f.sock.close()
    check_next_frontend_works(served, frontends)
    assert failed and served.thread.is_alive()


def test_a_trickled_message_is_bounded_as_a_whole(
    blk: tuple[Served, Path], frontends: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes that each come within the timeout still may not hold the loop longer."""
    monkeypatch.setattr(backend_module, "MESSAGE_TIMEOUT_S", 0.5)
    served, _ = blk
    f = connect(served, frontends)
    message = p.encode(Request.SET_FEATURES, p.u64(0))
    start = time.monotonic()
    with contextlib.suppress(OSError):  # the back-end may close while we still send
        for byte in message:
            f.sock.sendall(bytes([byte]))
            time.sleep(0.2)
    assert f.closed_by_backend()
    assert time.monotonic() - start < 0.2 * len(message)
    check_next_frontend_works(served, frontends)


def test_two_region_memory_table(blk: tuple[Served, Path], frontends: list) -> None:
    """Rings in the second region, at a high guest address: user->guest translation."""
    served, image = blk
    f = connect(served, frontends, ram_size=1 << 20, gpa=1 << 32)
    features = f.negotiate()
    half = f.ram_size // 2
    regions = [
        p.MemoryRegion(1 << 32, half, 0x5000_0000, 0),
        p.MemoryRegion((1 << 32) + half, half, 0x9000_0000, half),
    ]
    assert f.set_mem_table(regions) == 0
    drv = MockDriver(f.memory, 64, base=(1 << 32) + half, event_idx=bool(features & 1 << 29))
    f.user_addr = lambda gpa: 0x9000_0000 + gpa - ((1 << 32) + half)  # type: ignore[method-assign]
    assert f.setup_ring(0, drv) == 0
    data = os.urandom(512)
    used = do_request(f, drv, [struct.pack("<IIQ", VIRTIO_BLK_T_OUT, 0, 1), data], [1])
    assert used.written == b"\x00"
    assert image.read_bytes()[512:1024] == data


def test_smaller_frontend_ring_is_warned_about(
    blk: tuple[Served, Path], frontends: list, caplog: pytest.LogCaptureFixture
) -> None:
    served, _ = blk
    f = connect(served, frontends)
    with caplog.at_level(logging.WARNING, "kvmlite.vhost_user"):
        drv = start_blk(f)  # 64 entries; the device was built for 256
    assert "--queue-size 64" in caplog.text
    used = do_request(f, drv, [struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0)], [512, 1])
    assert used.length == 513


def test_memory_table_replaced_while_running(blk: tuple[Served, Path], frontends: list) -> None:
    served, _ = blk
    f = connect(served, frontends)
    drv = start_blk(f)
    req = [struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0)]
    assert do_request(f, drv, req, [512, 1]).length == 513
    # The same RAM again (QEMU re-sends the table when the guest's memory map changes).
    assert f.set_mem_table() == 0
    assert do_request(f, drv, req, [512, 1]).length == 513
    # A table without the rings' RAM is refused, and the old one stays in use.
    moved = [p.MemoryRegion(1 << 32, f.ram_size, USER_BASE, 0)]
    assert f.set_mem_table(moved) == 1
    assert do_request(f, drv, req, [512, 1]).length == 513


def test_a_watch_callback_that_raises_does_not_stop_the_backend(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A device backend's callback with a bug is logged; serve_forever keeps going."""
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    calls: list[int] = []

    def boom() -> None:
        calls.append(os.eventfd_read(efd))
        raise RuntimeError("bug in a watched callback")

    server = VhostUserBackend(VirtioRng(), str(tmp_path / "rng.sock"), watch=[(efd, boom)])
    thread = threading.Thread(target=server.serve_forever)
    try:
        with caplog.at_level(logging.ERROR):
            thread.start()
            os.eventfd_write(efd, 1)
            alive = threading.Event()
            for _ in range(100):
                if calls:
                    break
                time.sleep(0.05)
            server.call_soon(alive.set)
            assert alive.wait(5), "the loop died with the callback's exception"
        assert calls == [1] and thread.is_alive()
        assert "bug in a watched callback" in caplog.text
    finally:
        server.stop()
        thread.join(5)
        server.close()
        os.close(efd)


def test_kick_fd_that_hangs_up_is_dropped(blk: tuple[Served, Path], frontends: list) -> None:
    """A kick fd whose writer is closed (EPOLLHUP for ever) is dropped, not polled in a loop."""
    served, _ = blk
    f = connect(served, frontends)
    f.negotiate()
    assert f.set_mem_table() == 0
    drv = MockDriver(f.memory, 64)
    assert f.setup_ring(0, drv, start=False) == 0
    r, w = os.pipe()
    f.fds.append(r)
    assert f.ack(Request.SET_VRING_KICK, p.u64(0), [r]) == 0
    assert f.ack(Request.SET_VRING_ENABLE, p.vring_state(0, 1)) == 0
    calls = 0
    real = served.backend.device.process_queue

    def counting(index: int) -> None:
        nonlocal calls
        calls += 1
        real(index)

    served.backend.device.process_queue = counting  # type: ignore[method-assign]
    os.close(w)  # the kick fd hangs up
    deadline = time.monotonic() + 10
    while served.backend.session.vrings[0].kick_fd is not None:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"kick fd never dropped ({calls} spins)"
        f.call_u64(Request.GET_FEATURES)  # the loop goes round
    assert calls == 0
    # A new kick fd starts the ring again, and requests are served.
    kick = os.eventfd(0, os.EFD_NONBLOCK)
    f.fds.append(kick)
    drv.notify = lambda: os.eventfd_write(kick, 1)
    assert f.ack(Request.SET_VRING_KICK, p.u64(0), [kick]) == 0
    call = os.eventfd(0, os.EFD_NONBLOCK)
    f.fds.append(call)
    f.call[0] = call
    assert f.ack(Request.SET_VRING_CALL, p.u64(0), [call]) == 0
    used = do_request(f, drv, [struct.pack("<IIQ", 0, 0, 0)], [512, 1])
    assert used.length == 513

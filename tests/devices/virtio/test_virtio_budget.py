"""Guest-memory budget: no chain makes a device hold more than a fixed amount of host memory.

The hostile chain is the issue-17 one: as many descriptors as the queue has,
each covering all of guest RAM (8 MiB here), so reading it whole would cost
64 x RAM. ``tracemalloc`` measures the peak of what Python allocates while the
device handles it; the bound is far below one RAM's worth.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable

import pytest
from virtio_fakes import FakeChar, MemBlockBackend

from kvmlite.devices.virtio.blk import VirtioBlock
from kvmlite.devices.virtio.console import VIRTIO_CONSOLE_F_MULTIPORT, VirtioConsole
from kvmlite.devices.virtio.net import VirtioNet
from kvmlite.devices.virtio.rng import VirtioRng
from kvmlite.devices.virtio.spec import VIRTIO_F_VERSION_1, bit
from kvmlite.testing import MockDriver, attach_drivers, bytearray_memory

RAM = 8 << 20
QUEUE = 64
BUDGET = 1 << 20  # well under one RAM (8 MiB), let alone 64 of them


class CountingChar(FakeChar):
    """Counts output instead of keeping it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)


class CountingNet:
    vnet_hdr = False

    def __init__(self) -> None:
        self.sent = 0

    def send(self, frame: bytes) -> None:
        self.sent += 1

    def recv_frames(self) -> list[bytes]:
        return []

    def can_send(self) -> bool:
        return True

    def set_offloads(self, features: int) -> None:
        pass


def all_of_ram(n: int, writable: bool, head: bytes = b"", drv: MockDriver | None = None):
    """``n`` buffers that each cover all of RAM (after an optional readable ``head``)."""
    bufs: list[tuple[int, int, bool]] = []
    if head:
        assert drv is not None
        addr = drv.alloc(len(head))
        drv.memory.write(addr, head)
        bufs.append((addr, len(head), False))
    return bufs + [(0, RAM, writable)] * (n - len(bufs))


def peak_while(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_console_transmit_is_streamed() -> None:
    con = CountingChar()
    dev = VirtioConsole(con, [], queue_size=QUEUE)
    drivers, _, _ = attach_drivers(dev, bytearray_memory(RAM))
    tx = drivers[1]
    tx.add_raw_chain(all_of_ram(QUEUE, False))
    assert peak_while(tx.kick) < BUDGET
    assert con.written == QUEUE * RAM  # all of it reached the backend, in pieces
    assert [u.length for u in tx.get_used()] == [0]


def test_console_control_transmit_reads_only_the_message() -> None:
    dev = VirtioConsole(CountingChar(), [("p", CountingChar())], queue_size=QUEUE)
    features = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_CONSOLE_F_MULTIPORT)
    drivers, _, _ = attach_drivers(dev, bytearray_memory(RAM), features=features)
    ctrl_tx = drivers[3]
    ctrl_tx.add_raw_chain(all_of_ram(QUEUE, False))
    assert peak_while(ctrl_tx.kick) < BUDGET
    assert len(ctrl_tx.get_used()) == 1


def test_net_transmit_and_control_are_capped() -> None:
    backend = CountingNet()
    dev = VirtioNet(backend, mac="52:54:00:12:34:56", queue_size=QUEUE)
    drivers, _, _ = attach_drivers(dev, bytearray_memory(RAM))
    drivers[1].add_raw_chain(all_of_ram(QUEUE, False))
    assert peak_while(drivers[1].kick) < BUDGET
    assert backend.sent == 0  # refused as a malformed chain (NEEDS_RESET), not read
    ctrl = drivers[dev.ctrl_queue]
    ctrl.add_raw_chain(all_of_ram(QUEUE - 1, False) + [(0, RAM, True)])
    assert peak_while(ctrl.kick) < BUDGET


def test_rng_fill_is_capped() -> None:
    dev = VirtioRng(queue_size=QUEUE)
    drivers, _, _ = attach_drivers(dev, bytearray_memory(RAM))
    drivers[0].add_raw_chain(all_of_ram(QUEUE, True))
    assert peak_while(drivers[0].kick) < BUDGET
    assert 0 < drivers[0].get_used()[0].length < RAM


@pytest.mark.parametrize("disk_size", [1 << 20, 1 << 30])
def test_blk_read_into_all_of_ram_is_zero_copy(disk_size: int) -> None:
    # A disk smaller than the request refuses it; a bigger one reads into the
    # views of guest RAM, copying nothing.
    backend = MemBlockBackend(disk_size) if disk_size <= 1 << 20 else _SparseRaw(disk_size)
    dev = VirtioBlock(backend, queue_size=QUEUE)
    drivers, _, _ = attach_drivers(dev, bytearray_memory(RAM))
    q = drivers[0]
    header = struct.pack("<IIQ", 0, 0, 0)  # VIRTIO_BLK_T_IN at sector 0
    status = q.alloc(1)
    bufs = all_of_ram(QUEUE - 1, True, header, q) + [(status, 1, True)]
    q.add_raw_chain(bufs)
    assert peak_while(q.kick) < BUDGET
    assert q.memory.read(status, 1) == (b"\x01" if disk_size == 1 << 20 else b"\x00")


class _SparseRaw:
    """A block backend that 'reads' zeros into the views without allocating."""

    read_only = False

    def __init__(self, size: int) -> None:
        self.size = size

    def readv(self, offset: int, bufs) -> int:  # noqa: ANN001
        return sum(len(b) for b in bufs)

    def writev(self, offset: int, bufs) -> int:  # noqa: ANN001
        return sum(len(b) for b in bufs)

    def flush(self) -> None:
        pass

"""Bounded resources: fds stay flat across 1000 vhost-user connect/disconnect cycles."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from kvmlite.devices.virtio.blk import VIRTIO_BLK_T_IN
from kvmlite.testing.poll import wait_until

from .conftest import Served
from .frontend import Frontend
from .test_backend import do_request, start_blk

CYCLES = 1000


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_fds_flat_across_connect_disconnect(blk: tuple[Served, Path]) -> None:
    served, _ = blk

    def cycle(io: bool) -> None:
        f = Frontend(served.path)
        try:
            drv = start_blk(f)  # memory table, a started ring: fds on both sides
            if io:
                used = do_request(f, drv, [struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0)], [512, 1])
                assert used.length == 513
        finally:
            f.close()

    for _ in range(10):  # warm-up: the executor's threads, lazily made objects
        cycle(io=True)
    before = open_fds()
    for i in range(CYCLES):
        cycle(io=i % 10 == 0)
    # The back-end handles the last disconnect on its own thread: one more round trip
    # (a full cycle) makes sure it has. No growth (fewer is fine: lazily made fds
    # of the warm-up, such as the I/O executor's, may have gone since).
    cycle(io=False)
    # The back-end closes the last session's fds on its own thread, after the
    # front-end has gone: wait (bounded) for them, a leak never gets there.
    wait_until(lambda: served.backend.connections == CYCLES + 11, 10, "the last connection")
    wait_until(lambda: open_fds() <= before + 2, 10, f"the fd count back to {before} + 2")

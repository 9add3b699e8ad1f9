"""SET_VRING_ENABLE: vhost-user.rst "Ring states" on the served VirtioBlock.

With VHOST_USER_F_PROTOCOL_FEATURES negotiated a started ring is disabled
until SET_VRING_ENABLE 1 (kicks are ignored, requests wait in the ring);
without it, rings are enabled from the start.
"""

from __future__ import annotations

import struct
from pathlib import Path

from kvmlite.testing import MockDriver
from kvmlite.vhost_user import protocol as p
from kvmlite.vhost_user.protocol import Request

from .conftest import Served
from .frontend import Frontend
from .test_backend import VIRTIO_BLK_T_IN, connect, do_request, frontends  # noqa: F401

READ0 = struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0)


def poll_used(f: Frontend, drv: MockDriver, timeout: float = 5) -> list:
    """The used entries that arrive within ``timeout`` (EVENT_IDX may skip interrupts)."""
    for _ in range(int(timeout / 0.05)):
        used = drv.get_used()
        if used:
            return used
        f.wait_call(0, 0.05)
    return []


def test_ring_waits_for_enable_with_protocol_features(
    blk: tuple[Served, Path],
    frontends: list[Frontend],  # noqa: F811
) -> None:
    served, _ = blk
    f = connect(served, frontends)
    f.negotiate()
    assert f.set_mem_table() == 0
    drv = MockDriver(f.memory, 64)
    assert f.setup_ring(0, drv, enable=False) == 0
    drv.add_chain([READ0], [512, 1])
    drv.kick(force=True)
    assert poll_used(f, drv, 0.3) == []  # disabled: the kick was ignored
    assert f.ack(Request.SET_VRING_ENABLE, p.vring_state(0, 1)) == 0
    used = poll_used(f, drv)
    assert len(used) == 1 and used[0].length == 513

    # Disabled again: a new request waits; enabling picks it up without a kick.
    assert f.ack(Request.SET_VRING_ENABLE, p.vring_state(0, 0)) == 0
    drv.add_chain([READ0], [512, 1])
    drv.kick(force=True)
    assert poll_used(f, drv, 0.3) == []
    assert f.ack(Request.SET_VRING_ENABLE, p.vring_state(0, 1)) == 0
    assert len(poll_used(f, drv)) == 1


def test_ring_starts_enabled_without_protocol_features(
    blk: tuple[Served, Path],
    frontends: list[Frontend],  # noqa: F811
) -> None:
    served, _ = blk
    f = connect(served, frontends)
    f.negotiate(vhost_user_pf=False)
    assert f.set_mem_table() == 0
    drv = MockDriver(f.memory, 64)
    assert f.setup_ring(0, drv, enable=False) == 0
    assert do_request(f, drv, [READ0], [512, 1]).length == 513


def test_enable_value_other_than_0_or_1_is_refused(
    blk: tuple[Served, Path],
    frontends: list[Frontend],  # noqa: F811
) -> None:
    served, _ = blk
    f = connect(served, frontends)
    f.negotiate()
    assert f.ack(Request.SET_VRING_ENABLE, p.vring_state(0, 2)) == 1
    assert f.ack(Request.SET_VRING_ENABLE, p.vring_state(0, 1)) == 0

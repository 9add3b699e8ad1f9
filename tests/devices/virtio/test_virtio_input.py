"""virtio-input tablet: config space selections, pointer events, state."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from kvmlite.devices.virtio import input as vi
from kvmlite.state import dumps, loads
from kvmlite.testing import attach_drivers, bytearray_memory


def _select(dev: vi.VirtioTablet, select: int, subsel: int) -> bytes:
    dev.write_config(0, bytes((select, subsel)))
    size = dev.read_config(2, 1)[0]
    return dev.read_config(8, size) if size else b""


def test_config_space_describes_a_tablet() -> None:
    dev = vi.VirtioTablet()
    assert dev.device_type == 18
    assert _select(dev, vi.VIRTIO_INPUT_CFG_ID_NAME, 0) == b"kvmlite tablet"
    assert struct.unpack("<HHHH", _select(dev, vi.VIRTIO_INPUT_CFG_ID_DEVIDS, 0))[0] == 6
    ev_abs = _select(dev, vi.VIRTIO_INPUT_CFG_EV_BITS, vi.EV_ABS)
    assert ev_abs == b"\x03"  # ABS_X, ABS_Y
    keys = _select(dev, vi.VIRTIO_INPUT_CFG_EV_BITS, vi.EV_KEY)
    assert len(keys) == 0x112 // 8 + 1 and keys[0x110 // 8] == 0b111
    assert _select(dev, vi.VIRTIO_INPUT_CFG_EV_BITS, 0x02) == b""  # no EV_REL
    assert struct.unpack("<5I", _select(dev, vi.VIRTIO_INPUT_CFG_ABS_INFO, vi.ABS_Y)) == (
        0, vi.ABS_MAX, 0, 0, 0,
    )  # fmt: skip
    assert _select(dev, 0x7F, 3) == b"" and len(dev.config_bytes()) == 136


def _events(used) -> list[tuple[int, int, int]]:
    return [vi.EVENT.unpack(u.written) for u in used]


def test_pointer_events_wait_for_buffers() -> None:
    dev = vi.VirtioTablet()
    [ev, st_], [irq, _], _ = attach_drivers(dev, bytearray_memory(1 << 20))
    dev.pointer(100, 200, 0b001)
    assert ev.get_used() == []
    for _ in range(6):
        ev.add_chain([], [8])
    ev.kick()
    assert _events(ev.get_used()) == [
        (vi.EV_ABS, vi.ABS_X, 100), (vi.EV_ABS, vi.ABS_Y, 200),
        (vi.EV_KEY, vi.BTN_LEFT, 1), (vi.EV_SYN, vi.SYN_REPORT, 0),
    ]  # fmt: skip
    dev.pointer(99999, -5, 0b100)  # clamped; left released, right pressed
    assert _events(ev.get_used()) == [(vi.EV_ABS, vi.ABS_X, vi.ABS_MAX), (vi.EV_ABS, vi.ABS_Y, 0)]
    assert irq.count >= 2
    st_.add_chain([vi.EVENT.pack(0x11, 0, 1)], [])  # an LED event: consumed
    st_.kick()
    assert len(st_.get_used()) == 1


def test_short_buffer_breaks_the_device_not_the_vmm() -> None:
    dev = vi.VirtioTablet()
    [ev, _], _, _ = attach_drivers(dev, bytearray_memory(1 << 20))
    ev.add_chain([], [4])
    dev.pointer(1, 2, 0)
    assert dev.broken and [u.length for u in ev.get_used()] == [0]


def test_pending_is_bounded_by_whole_groups() -> None:
    dev = vi.VirtioTablet()
    for i in range(2000):
        dev.pointer(i, i, 0)
    assert len(dev.pending) <= vi.PENDING_LIMIT
    assert dev.pending[0] == (vi.EV_ABS, vi.ABS_X, dev.pending[0][2])
    assert dev.pending[-1] == (vi.EV_SYN, vi.SYN_REPORT, 0)


@given(st.integers(-(2**31), 2**31), st.integers(-(2**31), 2**31), st.integers(0, 255))
def test_any_pointer_input(x: int, y: int, buttons: int) -> None:
    dev = vi.VirtioTablet()
    dev.pointer(x, y, buttons)
    assert all(0 <= v <= vi.ABS_MAX for t, _, v in dev.pending if t == vi.EV_ABS)


def test_save_restore_round_trip() -> None:
    dev = vi.VirtioTablet()
    dev.write_config(0, b"\x12\x01")
    dev.pointer(5, 6, 1)
    state = dev.save()
    restored = vi.VirtioTablet()
    restored.restore(loads(vi.VirtioInputState, dumps(state)))
    assert restored.save() == state

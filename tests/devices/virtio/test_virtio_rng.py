"""virtio-rng: filling buffers, the token-bucket rate limit, state."""

from __future__ import annotations

import dataclasses

import pytest

from kvmlite.devices.virtio.rng import VirtioRng, VirtioRngState
from kvmlite.errors import ConfigError
from kvmlite.state import dumps, loads
from kvmlite.testing import attach_drivers, bytearray_memory


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def counting_entropy(n: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


def test_fills_writable_buffers() -> None:
    dev = VirtioRng(entropy=counting_entropy)
    [drv], [irq], _ = attach_drivers(dev, bytearray_memory(1 << 20))
    drv.add_chain([], [10, 6])
    drv.kick()
    [u] = drv.get_used()
    assert u.length == 16 and u.written == counting_entropy(16)
    assert irq.count == 1


def test_default_source_is_random() -> None:
    dev = VirtioRng()
    [drv], _, _ = attach_drivers(dev, bytearray_memory(1 << 20))
    drv.add_chain([], [64])
    drv.add_chain([], [64])
    drv.kick()
    a, b = drv.get_used()
    assert a.written != b.written and a.length == 64


def test_readable_only_chain_gets_zero_bytes() -> None:
    dev = VirtioRng(entropy=counting_entropy)
    [drv], _, _ = attach_drivers(dev, bytearray_memory(1 << 20))
    drv.add_chain([b"junk"], [])
    drv.kick()
    [u] = drv.get_used()
    assert u.length == 0 and not dev.broken


def test_rate_limit_with_injected_clock_and_timer() -> None:
    clock = Clock()
    timers: list[tuple[float, object]] = []
    dev = VirtioRng(
        entropy=counting_entropy,
        rate_limit=100,
        clock=clock,
        timer=lambda delay, cb: timers.append((delay, cb)),
    )
    [drv], _, _ = attach_drivers(dev, bytearray_memory(1 << 20))
    for _ in range(3):
        drv.add_chain([], [64])
    drv.kick()
    used = drv.get_used()
    # 100 tokens: one full 64-byte buffer and 36 bytes of the next.
    assert [u.length for u in used] == [64, 36]
    assert len(timers) == 1 and timers[0][0] == pytest.approx(0.64)
    clock.now += 0.5  # 50 tokens
    timers[0][1]()  # type: ignore[operator]
    assert [u.length for u in drv.get_used()] == [50]
    with pytest.raises(ConfigError):
        VirtioRng(rate_limit=0)


def test_state_round_trip() -> None:
    dev = VirtioRng()
    attach_drivers(dev, bytearray_memory(1 << 20))
    state = loads(VirtioRngState, dumps(dev.save()))
    dev2 = VirtioRng.restore({}, state)
    assert dev2.save().device.acked_features == dev.acked_features
    # Activation itself comes back when the transport re-activates the device.
    assert dev2.save() == VirtioRngState(dataclasses.replace(state.device, activated=False))


def test_a_failing_entropy_source_stops_the_device_not_the_vmm() -> None:
    def broken(n: int) -> bytes:
        raise RuntimeError("entropy source gone")

    dev = VirtioRng(entropy=broken)
    resets = []
    dev.needs_reset_handler = lambda: resets.append(1)
    [drv], _, _ = attach_drivers(dev, bytearray_memory(1 << 20))
    drv.add_chain([], [8])
    drv.kick()  # must not raise
    assert dev.broken and resets == [1]

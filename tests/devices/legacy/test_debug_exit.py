import pytest

from kvmlite.bus import Bus
from kvmlite.devices.legacy.debug_exit import (
    DEBUG_EXIT_PORT,
    DEBUG_EXIT_SIZE,
    DebugExit,
    debug_exit_status,
)


@pytest.fixture
def setup():
    values: list[int] = []
    bus = Bus("pio")
    bus.insert(DebugExit(values.append), DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE)
    return bus, values


@pytest.mark.parametrize(
    "data,value",
    [(b"\x00", 0), (b"\x07", 7), (b"\x34\x12", 0x1234), (b"\x01\x00\x00\x80", 1 << 31 | 1)],
)
def test_write_sizes(setup, data, value):
    bus, values = setup
    bus.write(DEBUG_EXIT_PORT, data)
    assert values == [value]


def test_other_offsets_and_reads_do_nothing(setup):
    bus, values = setup
    bus.write(DEBUG_EXIT_PORT + 1, b"\x01")
    assert bus.read(DEBUG_EXIT_PORT, 1) == b"\xff"
    assert values == []


@pytest.mark.parametrize("v,status", [(0, 0), (1, 1), (255, 255), (256, 255), (0xFFFFFFFF, 255)])
def test_exit_status_convention(v, status):
    assert debug_exit_status(v) == status

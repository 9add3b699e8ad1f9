import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmlite.bus import UNCLAIMED_LOG_LIMIT, Bus
from kvmlite.errors import ConfigError


class Reg:
    """A device that remembers its accesses and answers with its offset."""

    def __init__(self, name: str = "reg") -> None:
        self.name = name
        self.writes: list[tuple[int, bytes]] = []
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, size: int) -> bytes:
        self.reads.append((offset, size))
        return bytes([offset & 0xFF]) * size

    def write(self, offset: int, data: bytes) -> None:
        self.writes.append((offset, data))


class Broken:
    def read(self, offset: int, size: int) -> bytes:
        raise RuntimeError("bug")

    def write(self, offset: int, data: bytes) -> None:
        raise RuntimeError("bug")


def test_device_sees_offset_not_address():
    bus = Bus("pio")
    dev = Reg()
    bus.insert(dev, 0x3F8, 8)
    assert bus.dispatch_read(0x3FD, 1) == b"\x05"
    assert bus.dispatch_write(0x3F8, b"A")
    assert dev.writes == [(0, b"A")]
    assert dev.reads == [(5, 1)]


def test_unclaimed_and_edges():
    bus = Bus()
    bus.insert(Reg(), 0x10, 4)
    assert bus.dispatch_read(0x0F, 1) is None
    assert bus.dispatch_read(0x14, 1) is None
    assert bus.dispatch_read(0x13, 1) == b"\x03"
    assert bus.dispatch_write(0x14, b"x") is False
    # Straddles the end: refused, the device never sees it.
    assert bus.dispatch_read(0x12, 4) is None
    assert bus.dispatch_write(0x13, b"ab") is False


def test_overlap_refused_names_both():
    bus = Bus("mmio")
    bus.insert(Reg("uart"), 0x100, 0x10)
    for base, size in [(0x100, 1), (0xF8, 0x10), (0x10F, 4), (0x104, 2), (0x0, 0x1000)]:
        with pytest.raises(ConfigError) as e:
            bus.insert(Reg("rtc"), base, size)
        assert "uart" in str(e.value) and "rtc" in str(e.value)
    # Adjacent ranges are fine.
    bus.insert(Reg("a"), 0xF0, 0x10)
    bus.insert(Reg("b"), 0x110, 0x10)
    assert [r.base for r in bus.devices()] == [0xF0, 0x100, 0x110]


@pytest.mark.parametrize("size", [0, -1])
def test_empty_size_refused(size):
    with pytest.raises(ConfigError, match="at least one byte"):
        Bus().insert(Reg(), 0x10, size)


def test_remove():
    bus = Bus()
    d = Reg()
    bus.insert(d, 0x60, 1)
    bus.insert(Reg(), 0x64, 1)
    with pytest.raises(ConfigError):
        bus.remove(0x61)
    assert bus.remove(0x60) is d
    assert bus.dispatch_read(0x60, 1) is None
    assert len(bus) == 1
    bus.insert(d, 0x60, 4)  # the freed space can be reused


def test_device_exception_is_contained(caplog):
    bus = Bus()
    bus.insert(Broken(), 0, 4)
    with caplog.at_level(logging.ERROR):
        assert bus.dispatch_read(0, 1) is None
        assert bus.dispatch_write(0, b"x") is False
    assert "failed" in caplog.text


def test_open_bus_read_and_rate_limited_log(caplog):
    bus = Bus("pio")
    with caplog.at_level(logging.DEBUG, logger="kvmlite.bus"):
        assert bus.read(0x80, 2) == b"\xff\xff"
        bus.read(0x80, 1)
        bus.write(0x80, b"\x00")
        assert caplog.text.count("0x80") == 1
        for a in range(UNCLAIMED_LOG_LIMIT * 2):
            bus.read(0x1000 + a, 1)
    assert len(caplog.records) == UNCLAIMED_LOG_LIMIT


ranges = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(-2, 64)), min_size=1, max_size=40)


@settings(max_examples=200)
@given(ranges, st.lists(st.tuples(st.integers(0, (1 << 16) + 80), st.sampled_from([1, 2, 4, 8]))))
def test_random_insert_lookup_matches_model(inserts, probes):
    bus = Bus()
    model: list[tuple[int, int, Reg]] = []
    for base, size in inserts:
        dev = Reg()
        overlaps = any(b < base + size and base < b + s for b, s, _ in model)
        if size <= 0 or overlaps:
            with pytest.raises(ConfigError):
                bus.insert(dev, base, size)
        else:
            bus.insert(dev, base, size)
            model.append((base, size, dev))
    assert [(r.base, r.size) for r in bus.devices()] == sorted((b, s) for b, s, _ in model)
    for addr, size in probes:
        owner = [(b, d) for b, s, d in model if b <= addr and addr + size <= b + s]
        got = bus.find(addr, size)
        if owner:
            assert got is not None and got.device is owner[0][1] and got.base == owner[0][0]
            assert bus.dispatch_read(addr, size) == bytes([(addr - owner[0][0]) & 0xFF]) * size
        else:
            assert got is None
            assert bus.dispatch_read(addr, size) is None


def test_concurrent_dispatch_while_remapping():
    """A vCPU thread dispatching while another thread moves a device (a BAR remap)."""
    import threading

    bus = Bus("mmio")
    fixed = Reg("fixed")
    bus.insert(fixed, 0x1000, 0x10)
    stop = threading.Event()
    errors: list[str] = []

    def vcpu() -> None:
        while not stop.is_set():
            if bus.dispatch_read(0x1004, 4) != b"\x04" * 4:
                errors.append("fixed device lost")
            got = bus.dispatch_read(0x2000, 1)
            if got not in (None, b"\x00"):
                errors.append(f"bad read {got!r}")

    t = threading.Thread(target=vcpu)
    t.start()
    try:
        moving = Reg("bar")
        for _ in range(3000):
            bus.insert(moving, 0x2000, 0x100)
            bus.remove(0x2000)
            bus.insert(moving, 0x800, 0x100)
            bus.remove(0x800)
    finally:
        stop.set()
        t.join()
    assert errors == []

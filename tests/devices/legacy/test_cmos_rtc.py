"""CmosRtc: time formats, setting the time the way Linux does, UIP, NVRAM."""

import calendar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite import state
from kvmlite.devices.legacy.rtc import (
    CMOS_CENTURY,
    RTC_DAY_OF_MONTH,
    RTC_DAY_OF_WEEK,
    RTC_HOURS,
    RTC_MINUTES,
    RTC_MONTH,
    RTC_REG_A,
    RTC_REG_B,
    RTC_REG_C,
    RTC_REG_D,
    RTC_SECONDS,
    RTC_YEAR,
    CmosRtc,
    RtcState,
    cmos_memory_bytes,
)

# 2026-11-25 (a Wednesday) 23:36:07.25 UTC
T0 = calendar.timegm((2026, 11, 25, 23, 36, 7)) + 0.25


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Rtc:
    def __init__(self, t: float = T0, saved: RtcState | None = None) -> None:
        self.clock = Clock(t)
        self.dev = (
            CmosRtc(self.clock) if saved is None else CmosRtc.restore({"clock": self.clock}, saved)
        )

    def get(self, index: int) -> int:
        self.dev.write(0, bytes([index]))
        return self.dev.read(1, 1)[0]

    def put(self, index: int, value: int) -> None:
        self.dev.write(0, bytes([index]))
        self.dev.write(1, bytes([value]))


def test_bcd_24h_default():
    r = Rtc()
    assert r.get(RTC_REG_B) & 0x06 == 0x02
    assert [r.get(i) for i in (RTC_SECONDS, RTC_MINUTES, RTC_HOURS)] == [0x07, 0x36, 0x23]
    assert [r.get(i) for i in (RTC_DAY_OF_MONTH, RTC_MONTH, RTC_YEAR)] == [0x25, 0x11, 0x26]
    assert r.get(CMOS_CENTURY) == 0x20
    assert r.get(RTC_DAY_OF_WEEK) == 4  # Sunday = 1
    assert r.get(RTC_REG_D) == 0x80
    assert r.get(RTC_REG_C) == 0


def test_binary_and_12h():
    r = Rtc()
    r.put(RTC_REG_B, 0x04)  # binary, 12-hour
    assert r.get(RTC_SECONDS) == 7
    assert r.get(RTC_HOURS) == 0x80 | 11  # 11 PM
    assert r.get(CMOS_CENTURY) == 20
    r.clock.t = calendar.timegm((2026, 11, 25, 0, 5, 0))
    assert r.get(RTC_HOURS) == 12  # 12 AM
    r.put(RTC_REG_B, 0x00)  # BCD, 12-hour
    r.clock.t = calendar.timegm((2026, 11, 25, 12, 5, 0))
    assert r.get(RTC_HOURS) == 0x80 | 0x12


def test_time_follows_clock():
    r = Rtc()
    r.clock.t += 60
    assert r.get(RTC_MINUTES) == 0x37


def test_uip_window_linux_accepts():
    r = Rtc()
    assert not r.get(RTC_REG_A) & 0x80
    r.clock.t = T0 - 0.25 + 0.9999  # 100 us before the update
    assert r.get(RTC_REG_A) & 0x80
    r.clock.t = T0 - 0.25 + 1.0
    assert not r.get(RTC_REG_A) & 0x80
    # mc146818_avoid_UIP: seconds, UIP clear, fields, UIP clear, same seconds.
    r.clock.t = T0
    sec = r.get(RTC_SECONDS)
    assert not r.get(RTC_REG_A) & 0x80
    assert r.get(RTC_SECONDS) == sec


def test_linux_set_time_with_set_bit():
    r = Rtc()
    b = r.get(RTC_REG_B)
    r.put(RTC_REG_B, b | 0x80)
    r.clock.t += 5  # time is frozen while SET is held
    assert r.get(RTC_SECONDS) == 0x07
    assert not r.get(RTC_REG_A) & 0x80
    for index, value in [
        (RTC_SECONDS, 0x30),
        (RTC_MINUTES, 0x15),
        (RTC_HOURS, 0x08),
        (RTC_DAY_OF_MONTH, 0x29),
        (RTC_MONTH, 0x02),
        (RTC_YEAR, 0x24),
        (CMOS_CENTURY, 0x20),
    ]:
        r.put(index, value)
    assert r.get(RTC_DAY_OF_MONTH) == 0x29  # Feb 29 2024 is valid (leap year)
    r.put(RTC_REG_B, b)
    assert r.dev.guest_time() == calendar.timegm((2024, 2, 29, 8, 15, 30))
    r.clock.t += 90
    assert (r.get(RTC_MINUTES), r.get(RTC_SECONDS)) == (0x17, 0x00)
    # The offset persists through save/restore onto a device with another clock.
    other = Rtc(r.clock.t, state.loads(RtcState, state.dumps(r.dev.save())))
    assert other.get(RTC_MINUTES) == 0x17 and other.get(RTC_YEAR) == 0x24


def test_write_without_set_takes_effect():
    r = Rtc()
    r.put(RTC_YEAR, 0x30)
    assert r.get(RTC_YEAR) == 0x30 and r.get(RTC_MINUTES) == 0x36
    r.put(RTC_REG_B, 0x02 | 0x04)
    r.put(RTC_HOURS, 5)
    assert r.get(RTC_HOURS) == 5
    r.put(RTC_REG_B, 0x04)  # 12-hour binary: 5 PM
    r.put(RTC_HOURS, 0x80 | 5)
    r.put(RTC_REG_B, 0x06)
    assert r.get(RTC_HOURS) == 17


def test_hostile_values_are_clamped():
    r = Rtc()
    r.put(RTC_MONTH, 0x99)
    r.put(RTC_DAY_OF_MONTH, 0xFF)
    r.put(RTC_SECONDS, 0xFA)
    assert r.get(RTC_MONTH) == 0x12
    assert r.get(RTC_DAY_OF_MONTH) == 0x31
    assert r.get(RTC_SECONDS) <= 0x59


def test_index_nmi_bit_and_index_port_read():
    r = Rtc()
    r.dev.write(0, bytes([0x80 | RTC_REG_D]))
    assert r.dev.nmi_disabled
    assert r.dev.read(1, 1) == b"\x80"
    assert r.dev.read(0, 1) == b"\xff"
    r.dev.write(0, bytes([RTC_REG_D]))
    assert not r.dev.nmi_disabled


def test_nvram_and_memory_size():
    r = Rtc()
    r.put(0x40, 0xAB)
    assert r.get(0x40) == 0xAB
    r.dev.set_memory_size(3 << 30, 2 << 30)
    assert r.get(0x15) | r.get(0x16) << 8 == 640
    assert r.get(0x17) | r.get(0x18) << 8 == 0xFFFF
    assert r.get(0x34) | r.get(0x35) << 8 == ((3 << 30) - (16 << 20)) // 65536
    assert r.get(0x5B) | r.get(0x5C) << 8 | r.get(0x5D) << 16 == (2 << 30) // 65536
    small = cmos_memory_bytes(8 << 20, 0)
    assert small[0x17] | small[0x18] << 8 == 7 * 1024
    assert small[0x34] == small[0x35] == 0
    with pytest.raises(ValueError):
        r.dev.set_cmos_byte(CMOS_CENTURY, 0)
    with pytest.raises(ValueError):
        r.dev.set_cmos_byte(0x80, 0)


def test_save_restore_round_trip_while_set_held():
    r = Rtc()
    r.put(0x50, 7)
    r.put(RTC_REG_B, 0x82)
    r.put(RTC_MINUTES, 0x01)
    saved = r.dev.save()
    other = Rtc(T0 + 1000, state.loads(RtcState, state.dumps(saved)))
    assert other.dev.save() == saved
    other.put(RTC_REG_B, 0x02)
    assert other.get(RTC_MINUTES) == 0x01 and other.get(0x50) == 7


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 255), st.integers(0, 255)), max_size=200))
def test_fuzz_never_raises(ops):
    r = Rtc()
    for is_write, index, value in ops:
        r.dev.write(0, bytes([index]))
        if is_write:
            r.dev.write(1, bytes([value]))
        else:
            assert len(r.dev.read(1, 1)) == 1


class TickingClock:
    """A host clock that moves on by ``step`` seconds every time it is read,
    like a slow guest whose every port access takes that long."""

    def __init__(self, t: float, step: float) -> None:
        self.t = t
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def linux_get_time(dev: CmosRtc) -> tuple[int, ...]:
    """mc146818_avoid_UIP + mc146818_get_time's callback (Linux 6.1)."""

    def get(index: int) -> int:
        dev.write(0, bytes([index]))
        return dev.read(1, 1)[0]

    for _ in range(10000):
        seconds = get(RTC_SECONDS)
        if get(RTC_REG_A) & 0x80:
            continue
        if seconds != get(RTC_SECONDS):
            continue
        fields = (
            seconds,
            get(RTC_MINUTES),
            get(RTC_HOURS),
            get(RTC_DAY_OF_MONTH),
            get(RTC_MONTH),
            get(RTC_YEAR),
            get(CMOS_CENTURY),
        )
        if get(RTC_REG_A) & 0x80:
            continue
        if seconds != get(RTC_SECONDS):
            continue
        return fields
    raise AssertionError("UIP never cleared")


NEW_YEAR = calendar.timegm((2026, 12, 31, 23, 59, 59))


@given(st.floats(0.99, 1.0005), st.sampled_from([1e-6, 10e-6, 20e-6, 100e-6]))
def test_linux_never_reads_a_torn_time(frac, step):
    # Start just before the year rolls over: a torn read would mix years.
    clock = TickingClock(NEW_YEAR + frac, step)
    fields = linux_get_time(CmosRtc(clock))
    old = (0x59, 0x59, 0x23, 0x31, 0x12, 0x26, 0x20)
    new = (0x00, 0x00, 0x00, 0x01, 0x01, 0x27, 0x20)
    assert fields in (old, new), fields


@given(
    st.sampled_from([0x02, 0x06, 0x00, 0x04]),
    st.lists(st.tuples(st.sampled_from([0, 2, 4, 6, 7, 8, 9, 0x32]), st.integers(0, 255))),
)
def test_fuzz_time_writes_while_set_held(mode, writes):
    r = Rtc()
    r.put(RTC_REG_B, 0x80 | mode)
    for index, value in writes:
        r.put(index, value)
        for i in (0, 2, 4, 6, 7, 8, 9, 0x32):
            r.get(i)
    r.put(RTC_REG_B, mode)
    for i in (0, 2, 4, 6, 7, 8, 9, 0x32):
        r.get(i)


def test_restore_of_hostile_state_is_bounded():
    r = Rtc()
    bad = RtcState(
        index=0x1FF,
        nmi_disabled=True,
        reg_a=0x1FF,
        reg_b=0x80,
        ram=b"\x01" * 300,
        offset=float("inf"),
        held=(1000, -5, 99, 77, 13, 123456),
    )
    r.dev.load_state(bad)
    assert all(0 <= r.get(i) <= 255 for i in range(0x80))
    r.put(RTC_REG_B, 0x02)
    assert r.get(RTC_MONTH) == 0x12

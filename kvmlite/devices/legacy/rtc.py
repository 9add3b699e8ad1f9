"""MC146818 CMOS real-time clock and NVRAM on ports 0x70/0x71.

Follows the Motorola MC146818A data sheet (register map, registers A-D,
BCD/binary and 12/24-hour formats, the update cycle and UIP) and the PC
CMOS layout that firmware and Linux read (century at 0x32 as named by the
ACPI FADT CENTURY field; memory size bytes as QEMU's pc_cmos_init writes them).

Theory of operation
-------------------
The clock is not a counter: the guest's time is ``clock() + offset``, with
``offset`` (seconds, kept in the saved state) changed only when the guest
sets the time. So the time keeps running while the VM is paused or saved,
like a battery-backed RTC, and a restored VM reads the wall clock.

Setting the time: while register B's SET bit is 1 the time registers are
frozen and writes go to a held copy; clearing SET loads it (Linux's
``mc146818_set_time`` does exactly this). A write to a time register with
SET clear takes effect at once. Out-of-range values from the guest are
clamped to a valid date rather than refused.

UIP (register A bit 7) reads 1 during the last 244 us before each second
boundary of the guest's time, when the registers are about to change; the
registers change exactly at the boundary. Linux's ``mc146818_avoid_UIP``
(read seconds, check UIP, read, check UIP and seconds again) then never
sees a torn time.

Not emulated: the periodic, alarm and update-ended interrupts (IRQ 8) and
their flags in register C (which reads 0). Linux on x86 boots and keeps time
without them (kvm-clock / the PIT and LAPIC timers); the rtc-cmos driver
loads, but an RTC wake alarm will not fire. The alarm registers are kept
as plain bytes. Register D reads VRT=1 (the battery is good).
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from kvmlite.devices.persist import Persist

RTC_INDEX_PORT = 0x70
RTC_DATA_PORT = 0x71
RTC_PORT_RANGE = 2
RTC_IRQ = 8

# Register indices (MC146818A table 2, plus the PC's CMOS layout).
RTC_SECONDS = 0x00
RTC_SECONDS_ALARM = 0x01
RTC_MINUTES = 0x02
RTC_MINUTES_ALARM = 0x03
RTC_HOURS = 0x04
RTC_HOURS_ALARM = 0x05
RTC_DAY_OF_WEEK = 0x06
RTC_DAY_OF_MONTH = 0x07
RTC_MONTH = 0x08
RTC_YEAR = 0x09
RTC_REG_A = 0x0A
RTC_REG_B = 0x0B
RTC_REG_C = 0x0C
RTC_REG_D = 0x0D
CMOS_FIRST_RAM = 0x0E
CMOS_SIZE = 0x80
CMOS_CENTURY = 0x32  # the ACPI FADT CENTURY field points here

RTC_INDEX_NMI_DISABLE = 0x80
RTC_INDEX_MASK = 0x7F

RTC_A_UIP = 0x80
RTC_A_DV_MASK = 0x70
RTC_A_DV_32768HZ = 0x20  # divider running on a 32.768 kHz crystal
RTC_B_SET = 0x80
RTC_B_PIE = 0x40
RTC_B_AIE = 0x20
RTC_B_UIE = 0x10
RTC_B_SQWE = 0x08
RTC_B_DM_BINARY = 0x04
RTC_B_24H = 0x02
RTC_B_DSE = 0x01
RTC_D_VRT = 0x80

RTC_HOUR_PM = 0x80  # 12-hour mode

#: UIP rises this long before each update (MC146818A: tBUC = 244 us).
UIP_SETUP_S = 244e-6

DEFAULT_REG_A = RTC_A_DV_32768HZ | 0x06  # 1024 Hz periodic rate, as a PC BIOS sets
DEFAULT_REG_B = RTC_B_24H  # BCD, 24-hour: what PC firmware leaves

#: Guest time stays within about +-3000 years of the host's.
_MAX_OFFSET_S = 1e11

# Index into the held time fields.
_SEC, _MIN, _HOUR, _DAY, _MON, _YEAR = range(6)
_FIELD_OF_REG = {
    RTC_SECONDS: _SEC,
    RTC_MINUTES: _MIN,
    RTC_HOURS: _HOUR,
    RTC_DAY_OF_MONTH: _DAY,
    RTC_MONTH: _MON,
}


def _bcd(value: int) -> int:
    return ((value // 10) << 4) | (value % 10)


def _from_bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0x0F)


def _fields_of(t: float) -> list[int]:
    tm = time.gmtime(math.floor(t))
    return [tm.tm_sec, tm.tm_min, tm.tm_hour, tm.tm_mday, tm.tm_mon, tm.tm_year]


def _epoch_of(fields: list[int]) -> int:
    sec, minute, hour, day, mon, year = fields
    year = min(max(year, 1), 9999)
    mon = min(max(mon, 1), 12)
    day = min(max(day, 1), calendar.monthrange(year, mon)[1])
    return calendar.timegm(
        (year, mon, day, min(max(hour, 0), 23), min(max(minute, 0), 59), min(max(sec, 0), 59))
    )


# Per-field bounds a held (SET) time is kept within. The day is only checked
# against 31 here: while setting the time the guest writes the day before the
# month, so the month's own length is applied when the time is loaded.
_FIELD_BOUNDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 9999))


def _bounded(fields: list[int]) -> list[int]:
    return [min(max(v, lo), hi) for v, (lo, hi) in zip(fields, _FIELD_BOUNDS, strict=True)]


def cmos_memory_bytes(below_4g: int, above_4g: int) -> dict[int, int]:
    """CMOS bytes that tell firmware and old OSes the RAM size (QEMU's PC layout).

    0x15/0x16: base memory in KiB (640); 0x17/0x18 and 0x30/0x31: KiB above
    1 MiB (at most 65535); 0x34/0x35: 64 KiB units above 16 MiB below 4 GiB;
    0x5B..0x5D: 64 KiB units above 4 GiB.
    """
    out: dict[int, int] = {}

    def put(index: int, value: int, nbytes: int) -> None:
        for i in range(nbytes):
            out[index + i] = (value >> (8 * i)) & 0xFF

    put(0x15, 640, 2)
    ext_kib = min(max(below_4g // 1024 - 1024, 0), 0xFFFF)
    put(0x17, ext_kib, 2)
    put(0x30, ext_kib, 2)
    above_16m = min(max(below_4g - (16 << 20), 0) // 65536, 0xFFFF)
    put(0x34, above_16m, 2)
    put(0x5B, min(max(above_4g, 0) // 65536, 0xFFFFFF), 3)
    return out


@dataclass(frozen=True)
class RtcState:
    index: int
    nmi_disabled: bool
    reg_a: int
    reg_b: int
    ram: bytes  # all 128 bytes; the clock registers in it are unused
    offset: float  # guest time minus host clock, in seconds
    held: tuple[int, ...] | None  # time fields while SET is 1


class CmosRtc(Persist[RtcState]):
    """The CMOS RTC: offset 0 is the index port (0x70), offset 1 the data port (0x71)."""

    State = RtcState
    name = "cmos-rtc"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._index = 0
        self._nmi_disabled = False
        self._reg_a = DEFAULT_REG_A
        self._reg_b = DEFAULT_REG_B
        self._ram = bytearray(CMOS_SIZE)
        self._offset = 0.0
        self._held: list[int] | None = None

    @property
    def nmi_disabled(self) -> bool:
        """Bit 7 of the last index write (the PC's NMI mask; the VMM may ignore it)."""
        return self._nmi_disabled

    # -- host side --------------------------------------------------------------

    def set_cmos_byte(self, index: int, value: int) -> None:
        """Set an NVRAM byte (0x0E..0x7F) before boot."""
        if not CMOS_FIRST_RAM <= index < CMOS_SIZE or index == CMOS_CENTURY:
            raise ValueError(f"CMOS index {index:#x} is not a plain NVRAM byte")
        self._ram[index] = value & 0xFF

    def set_memory_size(self, below_4g: int, above_4g: int = 0) -> None:
        """Write the RAM size bytes (see ``cmos_memory_bytes``)."""
        for index, value in cmos_memory_bytes(below_4g, above_4g).items():
            self.set_cmos_byte(index, value)

    def guest_time(self) -> float:
        """The guest's idea of now, in seconds since the epoch (UTC)."""
        if self._held is not None:
            return float(_epoch_of(self._held))
        return self._clock() + self._offset

    # -- guest side ---------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        # The index port is write-only on a PC; reading it floats.
        value = self._read_reg(self._index) & 0xFF if offset == 1 else 0xFF
        return bytes((value,)) + b"\x00" * (size - 1) if size > 0 else b""

    def write(self, offset: int, data: bytes) -> None:
        if not data:
            return
        value = data[0]
        if offset == 0:
            self._index = value & RTC_INDEX_MASK
            self._nmi_disabled = bool(value & RTC_INDEX_NMI_DISABLE)
        elif offset == 1:
            self._write_reg(self._index, value)

    def _now_fields(self) -> tuple[list[int], float]:
        if self._held is not None:
            return list(self._held), 0.0
        t = self._clock() + self._offset
        return _fields_of(t), t - math.floor(t)

    def _encode(self, value: int) -> int:
        return value if self._reg_b & RTC_B_DM_BINARY else _bcd(value)

    def _decode(self, value: int) -> int:
        return value if self._reg_b & RTC_B_DM_BINARY else _from_bcd(value)

    def _read_reg(self, index: int) -> int:
        if index in _FIELD_OF_REG or index in (RTC_DAY_OF_WEEK, RTC_YEAR, CMOS_CENTURY):
            fields, _ = self._now_fields()
            if index == RTC_HOURS:
                return self._encode_hour(fields[_HOUR])
            if index == RTC_YEAR:
                return self._encode(fields[_YEAR] % 100)
            if index == CMOS_CENTURY:
                return self._encode(fields[_YEAR] // 100 % 100)
            if index == RTC_DAY_OF_WEEK:
                # MC146818 counts 1 = Sunday; Python's weekday() 0 = Monday.
                dow = calendar.weekday(*self._valid_date(fields)) + 2
                return self._encode(dow if dow <= 7 else 1)
            return self._encode(fields[_FIELD_OF_REG[index]])
        if index == RTC_REG_A:
            return self._reg_a | (RTC_A_UIP if self._update_in_progress() else 0)
        if index == RTC_REG_B:
            return self._reg_b
        if index == RTC_REG_C:
            return 0
        if index == RTC_REG_D:
            return RTC_D_VRT
        return self._ram[index]

    @staticmethod
    def _valid_date(fields: list[int]) -> tuple[int, int, int]:
        epoch = _epoch_of(fields)
        tm = time.gmtime(epoch)
        return tm.tm_year, tm.tm_mon, tm.tm_mday

    def _encode_hour(self, hour: int) -> int:
        if self._reg_b & RTC_B_24H:
            return self._encode(hour)
        pm = RTC_HOUR_PM if hour >= 12 else 0
        return self._encode(hour % 12 or 12) | pm

    def _decode_hour(self, value: int) -> int:
        if self._reg_b & RTC_B_24H:
            return self._decode(value)
        hour12 = self._decode(value & ~RTC_HOUR_PM) % 12
        return hour12 + (12 if value & RTC_HOUR_PM else 0)

    def _update_in_progress(self) -> bool:
        if self._held is not None or self._reg_a & RTC_A_DV_MASK != RTC_A_DV_32768HZ:
            return False  # updates are halted
        t = self._clock() + self._offset
        return t - math.floor(t) >= 1.0 - UIP_SETUP_S

    def _write_reg(self, index: int, value: int) -> None:
        if index in _FIELD_OF_REG or index in (RTC_YEAR, CMOS_CENTURY):
            self._write_time(index, value)
        elif index in (RTC_DAY_OF_WEEK,):
            pass  # derived from the date here
        elif index == RTC_REG_A:
            self._reg_a = value & ~RTC_A_UIP
        elif index == RTC_REG_B:
            self._write_reg_b(value)
        elif index in (RTC_REG_C, RTC_REG_D):
            pass  # read-only
        else:
            self._ram[index] = value  # alarms and NVRAM

    def _write_time(self, index: int, value: int) -> None:
        fields, frac = self._now_fields()
        if index == RTC_HOURS:
            fields[_HOUR] = self._decode_hour(value)
        elif index == RTC_YEAR:
            fields[_YEAR] = fields[_YEAR] // 100 * 100 + self._decode(value) % 100
        elif index == CMOS_CENTURY:
            fields[_YEAR] = self._decode(value) * 100 + fields[_YEAR] % 100
        else:
            fields[_FIELD_OF_REG[index]] = self._decode(value)
        if self._held is not None:
            self._held = _bounded(fields)  # loaded when SET is cleared
        else:
            self._offset = _epoch_of(fields) + frac - self._clock()

    def _write_reg_b(self, value: int) -> None:
        if value & RTC_B_SET and self._held is None:
            self._held, _ = self._now_fields()
        elif not value & RTC_B_SET and self._held is not None:
            self._offset = _epoch_of(self._held) - self._clock()
            self._held = None
        if value & RTC_B_SET:
            value &= ~RTC_B_UIE  # the data sheet: SET clears UIE
        self._reg_b = value

    # -- snapshot ---------------------------------------------------------------------

    def save(self) -> RtcState:
        return RtcState(
            index=self._index,
            nmi_disabled=self._nmi_disabled,
            reg_a=self._reg_a,
            reg_b=self._reg_b,
            ram=bytes(self._ram),
            offset=self._offset,
            held=None if self._held is None else tuple(self._held),
        )

    def load_state(self, state: RtcState) -> None:
        self._index = state.index & RTC_INDEX_MASK
        self._nmi_disabled = state.nmi_disabled
        self._reg_a = state.reg_a & 0x7F
        self._reg_b = state.reg_b & 0xFF
        ram = state.ram[:CMOS_SIZE]
        self._ram = bytearray(ram + bytes(CMOS_SIZE - len(ram)))
        # A corrupt offset must not push the time outside what gmtime handles.
        offset = state.offset if math.isfinite(state.offset) else 0.0
        self._offset = min(max(offset, -_MAX_OFFSET_S), _MAX_OFFSET_S)
        held = state.held
        self._held = _bounded(list(held)) if held is not None and len(held) == 6 else None

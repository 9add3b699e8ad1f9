import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite import state
from kvmlite.bus import Bus
from kvmlite.devices.legacy.acpi_pm import (
    ACPI_PM_BASE,
    ACPI_PM_SIZE,
    PM1A_CNT_BLK,
    PM1A_EVT_BLK,
    PM_TIMER_FREQUENCY,
    PM_TMR_BLK,
    PWRBTN_EN,
    PWRBTN_STS,
    SCI_EN,
    SLP_EN,
    TMR_STS,
    WAK_STS,
    AcpiPm,
    AcpiPmState,
)
from kvmlite.testing.interrupts import RecordingInterrupt


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


class Pm:
    def __init__(self, sleep: bool = False) -> None:
        self.clock = Clock()
        self.sci = RecordingInterrupt()
        self.poweroffs = 0
        self.sleeps: list[int] = []
        self.dev = AcpiPm(
            self.sci,
            self.poweroff,
            self.sleeps.append if sleep else None,
            clock=self.clock,
        )
        self.bus = Bus("pio")
        self.bus.insert(self.dev, ACPI_PM_BASE, ACPI_PM_SIZE)

    def poweroff(self) -> None:
        self.poweroffs += 1

    def inw(self, port: int) -> int:
        return int.from_bytes(self.bus.read(port, 2), "little")

    def outw(self, port: int, value: int) -> None:
        self.bus.write(port, value.to_bytes(2, "little"))

    def inl(self, port: int) -> int:
        return int.from_bytes(self.bus.read(port, 4), "little")


@pytest.fixture
def pm() -> Pm:
    return Pm()


def test_sci_en_reads_one(pm):
    assert pm.inw(PM1A_CNT_BLK) & SCI_EN
    pm.outw(PM1A_CNT_BLK, 0)
    assert pm.inw(PM1A_CNT_BLK) & SCI_EN


def test_s5_powers_off_slp_en_write_only(pm):
    pm.outw(PM1A_CNT_BLK, 5 << 10)  # type without SLP_EN: nothing yet
    assert pm.poweroffs == 0
    assert pm.inw(PM1A_CNT_BLK) == (5 << 10) | SCI_EN
    pm.outw(PM1A_CNT_BLK, (5 << 10) | SLP_EN)
    assert pm.poweroffs == 1
    assert not pm.inw(PM1A_CNT_BLK) & SLP_EN


def test_byte_write_of_high_half_triggers(pm):
    pm.bus.write(PM1A_CNT_BLK + 1, bytes([(5 << 2) | (SLP_EN >> 8)]))
    assert pm.poweroffs == 1


def test_other_sleep_types():
    p = Pm(sleep=True)
    p.outw(PM1A_CNT_BLK, (1 << 10) | SLP_EN)
    assert p.sleeps == [1] and p.poweroffs == 0
    assert p.inw(PM1A_EVT_BLK) & WAK_STS
    q = Pm(sleep=False)
    q.outw(PM1A_CNT_BLK, (3 << 10) | SLP_EN)  # ignored, no crash
    assert q.poweroffs == 0


def test_power_button_sci_and_write_one_to_clear(pm):
    pm.dev.press_power_button()
    assert not pm.sci.level  # not enabled yet
    assert pm.inw(PM1A_EVT_BLK) & PWRBTN_STS
    pm.outw(PM1A_EVT_BLK + 2, PWRBTN_EN)
    assert pm.sci.level
    assert pm.inw(PM1A_EVT_BLK + 2) == PWRBTN_EN
    pm.outw(PM1A_EVT_BLK, 0)  # writing 0 clears nothing
    assert pm.sci.level
    pm.outw(PM1A_EVT_BLK, PWRBTN_STS)
    assert not pm.sci.level
    assert not pm.inw(PM1A_EVT_BLK) & PWRBTN_STS


def test_pm_timer_24_bit_at_3_579545_mhz(pm):
    t0 = pm.inl(PM_TMR_BLK)
    pm.clock.t += 1.0
    assert (pm.inl(PM_TMR_BLK) - t0) & 0xFFFFFF == PM_TIMER_FREQUENCY
    pm.clock.t += 10.0
    assert pm.inl(PM_TMR_BLK) < 1 << 24
    assert pm.bus.read(PM_TMR_BLK, 1) == bytes([pm.inl(PM_TMR_BLK) & 0xFF])


def test_timer_status_bit_23(pm):
    pm.outw(PM1A_EVT_BLK, TMR_STS)
    assert not pm.inw(PM1A_EVT_BLK) & TMR_STS
    pm.clock.t += (1 << 23) / PM_TIMER_FREQUENCY + 0.01
    assert pm.inw(PM1A_EVT_BLK) & TMR_STS
    pm.outw(PM1A_EVT_BLK, TMR_STS)
    assert not pm.inw(PM1A_EVT_BLK) & TMR_STS


def test_save_restore_round_trip(pm):
    pm.outw(PM1A_EVT_BLK + 2, PWRBTN_EN)
    pm.dev.press_power_button()
    pm.outw(PM1A_CNT_BLK, 2 << 10)
    pm.clock.t += 2.0
    saved = pm.dev.save()
    other = Pm()
    other.clock.t = 5000.0
    args = {"sci": other.sci, "on_poweroff": other.poweroff, "clock": other.clock}
    other.dev = AcpiPm.restore(args, state.loads(AcpiPmState, state.dumps(saved)))
    other.bus = Bus("pio")
    other.bus.insert(other.dev, ACPI_PM_BASE, ACPI_PM_SIZE)
    assert other.sci.level
    assert other.dev.save() == saved
    assert other.inl(PM_TMR_BLK) == saved.timer_ticks & 0xFFFFFF


@given(st.lists(st.tuples(st.integers(0, 11), st.binary(min_size=1, max_size=4))))
def test_fuzz_never_raises(ops):
    p = Pm(sleep=True)
    for offset, data in ops:
        p.dev.write(offset, data)
        assert len(p.dev.read(offset, len(data))) == len(data)

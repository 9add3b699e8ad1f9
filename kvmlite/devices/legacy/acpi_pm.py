"""ACPI fixed-hardware power-management registers (the PM1a and PM timer blocks).

Follows the ACPI specification 6.5, section 4.8 ("ACPI Hardware
Specification"): the PM1 event registers PM1_STS / PM1_EN (§4.8.3.1,
tables 4.13-4.16), the PM1 control register PM1_CNT (§4.8.3.2, table 4.17)
and the power-management timer PM_TMR (§4.8.3.3). The FADT names the blocks:

* PM1a_EVT_BLK (PM1_EVT_LEN = 4) at port 0x600: PM1_STS (2 bytes), PM1_EN (2)
* PM1a_CNT_BLK (PM1_CNT_LEN = 2) at port 0x604: PM1_CNT
* PM_TMR_BLK (PM_TMR_LEN = 4) at port 0x608: a 24-bit counter (FADT flag
  TMR_VAL_EXT clear) at 3.579545 MHz

One ``AcpiPm`` device covers 0x600..0x60B (``ACPI_PM_SIZE`` = 12); 0x606..0x607
read as zero.

Theory of operation
-------------------
The machine is hardware-reduced in spirit but uses the fixed PM1 block: it
has no SMI_CMD port, so the OS never has to switch ACPI mode on and SCI_EN
reads 1 always. PM1_STS bits are write-1-to-clear. The SCI line is high
while any status bit is set together with its enable bit; it is re-evaluated
on every access and when the host presses a button, because the device has
no timer of its own: TMR_STS (the timer's bit 23 toggled) is therefore only
seen when the guest reads PM1_STS, and a TMR_EN-based SCI comes late. Linux
never enables it (it polls PM_TMR as a clocksource at most).

Writing PM1_CNT with SLP_EN set asks for sleep state SLP_TYP: the value the
DSDT's ``\\_S5`` package gives (``s5_slp_typ``) means soft-off and calls
``on_poweroff``; any other value calls ``on_sleep(slp_typ)`` when given (and
sets WAK_STS on return, as a wake-up would), else is ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kvmlite.devices.irq import IrqLine
from kvmlite.devices.persist import Persist

log = logging.getLogger(__name__)

PM1A_EVT_BLK = 0x600
PM1A_CNT_BLK = 0x604
PM_TMR_BLK = 0x608
PM1_EVT_LEN = 4
PM1_CNT_LEN = 2
PM_TMR_LEN = 4
ACPI_PM_BASE = PM1A_EVT_BLK
ACPI_PM_SIZE = 12
#: ISA IRQ the FADT's SCI_INT names (what QEMU's PIIX4/ICH9 use).
ACPI_SCI_IRQ = 9

# Register offsets from ACPI_PM_BASE.
PM1_STS = 0x0
PM1_EN = 0x2
PM1_CNT = PM1A_CNT_BLK - ACPI_PM_BASE
PM_TMR = PM_TMR_BLK - ACPI_PM_BASE

# PM1_STS (table 4.14) and PM1_EN (table 4.15) bits.
TMR_STS = 1 << 0
BM_STS = 1 << 4
GBL_STS = 1 << 5
PWRBTN_STS = 1 << 8
SLPBTN_STS = 1 << 9
RTC_STS = 1 << 10
PCIEXP_WAKE_STS = 1 << 14
WAK_STS = 1 << 15
TMR_EN = 1 << 0
GBL_EN = 1 << 5
PWRBTN_EN = 1 << 8
SLPBTN_EN = 1 << 9
RTC_EN = 1 << 10
PCIEXP_WAKE_DIS = 1 << 14
PM1_EN_MASK = TMR_EN | GBL_EN | PWRBTN_EN | SLPBTN_EN | RTC_EN | PCIEXP_WAKE_DIS
_SCI_SOURCES = TMR_STS | GBL_STS | PWRBTN_STS | SLPBTN_STS | RTC_STS

# PM1_CNT bits (table 4.17).
SCI_EN = 1 << 0
BM_RLD = 1 << 1
GBL_RLS = 1 << 2
SLP_TYP_SHIFT = 10
SLP_TYP_MASK = 0x7 << SLP_TYP_SHIFT
SLP_EN = 1 << 13
_CNT_STORED = BM_RLD | SLP_TYP_MASK

PM_TIMER_FREQUENCY = 3_579_545
PM_TMR_MASK = 0xFFFFFF
DEFAULT_S5_SLP_TYP = 5


@dataclass(frozen=True)
class AcpiPmState:
    pm1_sts: int
    pm1_en: int
    pm1_cnt: int
    timer_ticks: int  # PM timer count (not wrapped) when saved
    tmr_epoch: int  # timer bit-23 period when TMR_STS was last cleared


class AcpiPm(Persist[AcpiPmState]):
    """PM1a event/control blocks and the PM timer, at offsets 0, 4 and 8."""

    State = AcpiPmState
    name = "acpi-pm"

    def __init__(
        self,
        sci: IrqLine,
        on_poweroff: Callable[[], None],
        on_sleep: Callable[[int], None] | None = None,
        s5_slp_typ: int = DEFAULT_S5_SLP_TYP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sci = sci
        self._sci_level = False
        self._on_poweroff = on_poweroff
        self._on_sleep = on_sleep
        self._s5 = s5_slp_typ & 7
        self._clock = clock
        self._t0 = clock()
        self._sts = 0
        self._en = 0
        self._cnt = 0
        self._tmr_epoch = 0

    # -- host side -------------------------------------------------------------

    def press_power_button(self) -> None:
        """The fixed-feature power button: Linux's ACPI button driver shuts down cleanly."""
        self._sts |= PWRBTN_STS
        self._update_sci()

    def press_sleep_button(self) -> None:
        self._sts |= SLPBTN_STS
        self._update_sci()

    # -- guest side ---------------------------------------------------------------

    def _ticks(self) -> int:
        return int((self._clock() - self._t0) * PM_TIMER_FREQUENCY)

    def read(self, offset: int, size: int) -> bytes:
        if offset == PM_TMR and size == 4:  # the hot one: PM_TMR as a clocksource
            return (self._ticks() & PM_TMR_MASK).to_bytes(4, "little")
        self._poll_timer_status()
        image = (
            self._sts.to_bytes(2, "little")
            + self._en.to_bytes(2, "little")
            + (self._cnt | SCI_EN).to_bytes(2, "little")
            + b"\x00\x00"
            + (self._ticks() & PM_TMR_MASK).to_bytes(4, "little")
        )
        out = image[offset : offset + size]
        self._update_sci()
        return out + b"\x00" * (size - len(out))

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        for reg, handler in (
            (PM1_STS, self._write_sts),
            (PM1_EN, self._write_en),
            (PM1_CNT, self._write_cnt),
        ):
            lo, hi = max(offset, reg), min(end, reg + 2)
            if lo >= hi:
                continue
            value = mask = 0
            for addr in range(lo, hi):
                shift = 8 * (addr - reg)
                value |= data[addr - offset] << shift
                mask |= 0xFF << shift
            handler(value, mask)
        self._update_sci()

    def _write_sts(self, value: int, mask: int) -> None:
        self._poll_timer_status()
        cleared = value & mask
        if cleared & TMR_STS:
            self._tmr_epoch = self._ticks() >> 23
        self._sts &= ~cleared

    def _write_en(self, value: int, mask: int) -> None:
        self._en = ((self._en & ~mask) | (value & mask)) & PM1_EN_MASK

    def _write_cnt(self, value: int, mask: int) -> None:
        merged = (self._cnt & ~mask) | (value & mask)
        self._cnt = merged & _CNT_STORED  # GBL_RLS and SLP_EN are write-only
        if value & mask & SLP_EN:
            slp_typ = (merged & SLP_TYP_MASK) >> SLP_TYP_SHIFT
            if slp_typ == self._s5:
                self._on_poweroff()
            elif self._on_sleep is not None:
                self._on_sleep(slp_typ)
                self._sts |= WAK_STS
            else:
                log.info("guest asked for ACPI sleep type %d, which this VM does not do", slp_typ)

    def _poll_timer_status(self) -> None:
        if self._ticks() >> 23 != self._tmr_epoch:
            self._sts |= TMR_STS

    def _update_sci(self) -> None:
        level = bool(self._sts & self._en & _SCI_SOURCES)
        if level != self._sci_level:
            self._sci_level = level
            self._sci.set_level(level)

    # -- snapshot --------------------------------------------------------------------

    def save(self) -> AcpiPmState:
        return AcpiPmState(
            pm1_sts=self._sts,
            pm1_en=self._en,
            pm1_cnt=self._cnt,
            timer_ticks=self._ticks(),
            tmr_epoch=self._tmr_epoch,
        )

    def load_state(self, state: AcpiPmState) -> None:
        self._sts = state.pm1_sts & 0xFFFF
        self._en = state.pm1_en & PM1_EN_MASK
        self._cnt = state.pm1_cnt & _CNT_STORED
        # The timer goes on from where it was saved.
        self._t0 = self._clock() - state.timer_ticks / PM_TIMER_FREQUENCY
        self._tmr_epoch = state.tmr_epoch
        self._sci_level = bool(self._sts & self._en & _SCI_SOURCES)
        self._sci.set_level(self._sci_level)

"""16550A UART, as Linux's 8250 driver (drivers/tty/serial/8250) expects it.

Follows the National Semiconductor PC16550D datasheet: register map (table
II), FIFO control (FCR), interrupt identification and priorities (table IV),
loopback (MCR bit 4) and the modem status register.

Theory of operation
-------------------
Transmission is instantaneous: a THR write goes straight to ``output`` (the
VMM batches), so THR and the transmitter are always empty (LSR.THRE and
LSR.TEMT read 1) and the TX FIFO never holds anything.

Reception: the host pushes bytes with ``enqueue_input``; the RX FIFO holds at
most 16 bytes (1 with FIFOs disabled, the 16450 mode) and refuses the rest,
which the VMM keeps and offers again when ``wants_input()`` says there is
room. Input is never dropped on the host side; an overrun (LSR.OE) only
happens in loopback mode, where the guest itself fills the FIFO.

Interrupts (priority order, IIR values): receiver line status (0x06, cleared
by reading LSR), received data (0x04 at or above the FCR trigger level) or
character timeout (0x0C below it; raised at once instead of after four
character times, as the device has no timer; cleared by reading RBR until
empty), THR empty (0x02; set when IER.ETBEI goes 0->1 or a THR write leaves
THR empty, cleared by an IIR read that reports it or by a THR write), modem
status (0x00, cleared by reading MSR).

When a guest read empties the RX FIFO (or the guest clears it, or leaves
loopback), the optional ``on_rx_room`` callback runs, so the VMM can offer
the input it kept back without polling ``wants_input()``.

The device is not thread-safe: the VMM serialises register accesses from
vCPU threads and ``enqueue_input`` from its I/O loop (one lock per device).

The IRQ line level is "an enabled interrupt is pending and MCR.OUT2 is set",
as on a PC where OUT2 gates the UART's INTR onto the ISA bus. In loopback the
datasheet forces the OUT pins inactive, so the PC sees no IRQ then. The line
is only driven on a change.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from kvmlite.devices.irq import IrqLine
from kvmlite.devices.persist import Persist

# Register offsets (PC16550D table II). Some share an offset: which one is
# selected depends on read/write and LCR.DLAB.
UART_RBR = 0  # receiver buffer (read, DLAB=0)
UART_THR = 0  # transmitter holding (write, DLAB=0)
UART_DLL = 0  # divisor latch LSB (DLAB=1)
UART_IER = 1  # interrupt enable (DLAB=0)
UART_DLM = 1  # divisor latch MSB (DLAB=1)
UART_IIR = 2  # interrupt identification (read)
UART_FCR = 2  # FIFO control (write)
UART_LCR = 3
UART_MCR = 4
UART_LSR = 5
UART_MSR = 6
UART_SCR = 7
UART_REGS = 8  # size of the register block

UART_IER_ERBFI = 0x01  # received data available
UART_IER_ETBEI = 0x02  # THR empty
UART_IER_ELSI = 0x04  # receiver line status
UART_IER_EDSSI = 0x08  # modem status
UART_IER_MASK = 0x0F

UART_IIR_NO_INT = 0x01
UART_IIR_MSI = 0x00
UART_IIR_THRI = 0x02
UART_IIR_RDI = 0x04
UART_IIR_RLSI = 0x06
UART_IIR_CTI = 0x0C  # character timeout
UART_IIR_FIFO_ENABLED = 0xC0

UART_FCR_ENABLE_FIFO = 0x01
UART_FCR_CLEAR_RCVR = 0x02
UART_FCR_CLEAR_XMIT = 0x04
UART_FCR_DMA_SELECT = 0x08
UART_FCR_TRIGGER_MASK = 0xC0
_TRIGGER_LEVELS = (1, 4, 8, 14)

UART_LCR_DLAB = 0x80

UART_MCR_DTR = 0x01
UART_MCR_RTS = 0x02
UART_MCR_OUT1 = 0x04
UART_MCR_OUT2 = 0x08
UART_MCR_LOOP = 0x10
UART_MCR_MASK = 0x1F

UART_LSR_DR = 0x01
UART_LSR_OE = 0x02
UART_LSR_PE = 0x04
UART_LSR_FE = 0x08
UART_LSR_BI = 0x10
UART_LSR_THRE = 0x20
UART_LSR_TEMT = 0x40
UART_LSR_FIFOE = 0x80
UART_LSR_ERRORS = UART_LSR_OE | UART_LSR_PE | UART_LSR_FE | UART_LSR_BI

UART_MSR_DCTS = 0x01
UART_MSR_DDSR = 0x02
UART_MSR_TERI = 0x04
UART_MSR_DDCD = 0x08
UART_MSR_CTS = 0x10
UART_MSR_DSR = 0x20
UART_MSR_RI = 0x40
UART_MSR_DCD = 0x80
UART_MSR_DELTAS = 0x0F

UART_FIFO_SIZE = 16
#: Divisor for 115200 baud from the PC's 1.8432 MHz clock (the reset value).
DEFAULT_DIVISOR = 1

# The usual PC ports and ISA IRQs.
COM1_BASE, COM1_IRQ = 0x3F8, 4
COM2_BASE, COM2_IRQ = 0x2F8, 3
COM3_BASE, COM3_IRQ = 0x3E8, 4
COM4_BASE, COM4_IRQ = 0x2E8, 3

# With no cable, a PC's modem lines read CTS, DSR and DCD asserted: that is
# what a terminal that is "always there" looks like, and what keeps Linux's
# driver from waiting for carrier or flow control.
_MSR_IDLE_LINES = UART_MSR_CTS | UART_MSR_DSR | UART_MSR_DCD


@dataclass(frozen=True)
class SerialState:
    """Everything a 16550A holds (the IRQ line and output sink are not state)."""

    ier: int
    lcr: int
    mcr: int
    lsr_errors: int
    msr: int
    scr: int
    divisor: int
    fcr: int
    rx_fifo: bytes
    thr_ipending: bool


class Serial16550(Persist[SerialState]):
    """A 16550A UART with 16-byte FIFOs; register offsets 0..7 from the port base."""

    State = SerialState
    name = "serial16550"

    def __init__(
        self,
        irq: IrqLine,
        output: Callable[[bytes], None],
        on_rx_room: Callable[[], None] | None = None,
    ) -> None:
        self._irq = irq
        self._output = output
        self._on_rx_room = on_rx_room
        self._irq_level = False
        self._ier = 0
        self._lcr = 0
        self._mcr = UART_MCR_OUT2
        self._lsr_errors = 0  # OE/PE/FE/BI, cleared by an LSR read
        self._msr = _MSR_IDLE_LINES
        self._scr = 0
        self._divisor = DEFAULT_DIVISOR
        self._fcr = 0  # FIFO enable, DMA mode and trigger bits
        self._rx: deque[int] = deque()
        self._thr_ipending = False

    # -- host side -------------------------------------------------------------

    def _rx_capacity(self) -> int:
        return UART_FIFO_SIZE if self._fcr & UART_FCR_ENABLE_FIFO else 1

    def wants_input(self) -> bool:
        """Whether ``enqueue_input`` would accept at least one byte now."""
        return not (self._mcr & UART_MCR_LOOP) and len(self._rx) < self._rx_capacity()

    def enqueue_input(self, data: bytes) -> int:
        """Offer bytes from the host; returns how many were taken (the rest: retry later)."""
        if self._mcr & UART_MCR_LOOP:
            return 0  # in loopback the serial input pin is disconnected
        room = self._rx_capacity() - len(self._rx)
        taken = data[: max(room, 0)]
        if taken:
            self._rx.extend(taken)
            self._update_irq()
        return len(taken)

    def send_break(self) -> bool:
        """A break condition on the line (Linux's serial console turns it into SysRq).

        Like the 16550 in FIFO mode, a zero byte goes into the RX FIFO and
        LSR.BI is set; returns False (nothing done) when the FIFO is full or
        in loopback, so the caller may retry.
        """
        if self._mcr & UART_MCR_LOOP or len(self._rx) >= self._rx_capacity():
            return False
        self._rx.append(0)
        self._lsr_errors |= UART_LSR_BI
        self._update_irq()
        return True

    # -- guest side --------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        # Linux's 8250 only does byte accesses; a wider access gets the byte
        # register in its low byte and zeros above, like a byte-wide ISA device.
        value = self._read_reg(offset) if offset < UART_REGS else 0xFF
        if size == 1:
            return bytes((value,))
        return value.to_bytes(size, "little") if size > 0 else b""

    def write(self, offset: int, data: bytes) -> None:
        if data and offset < UART_REGS:
            self._write_reg(offset, data[0])

    def _read_reg(self, reg: int) -> int:
        dlab = self._lcr & UART_LCR_DLAB
        if reg == UART_RBR:
            if dlab:
                return self._divisor & 0xFF
            return self._read_rbr()
        if reg == UART_IER:
            return (self._divisor >> 8) & 0xFF if dlab else self._ier
        if reg == UART_IIR:
            iir = self._iir()
            if iir & 0x0F == UART_IIR_THRI:
                self._thr_ipending = False
                self._update_irq()
            return iir
        if reg == UART_LCR:
            return self._lcr
        if reg == UART_MCR:
            return self._mcr
        if reg == UART_LSR:
            lsr = self._lsr()
            if self._lsr_errors:
                self._lsr_errors = 0
                self._update_irq()
            return lsr
        if reg == UART_MSR:
            msr = self._msr
            if msr & UART_MSR_DELTAS:
                self._msr &= ~UART_MSR_DELTAS
                self._update_irq()
            return msr
        return self._scr

    def _read_rbr(self) -> int:
        if not self._rx:
            return 0
        value = self._rx.popleft()
        self._update_irq()
        if not self._rx:
            self._rx_room()
        return value

    def _rx_room(self) -> None:
        if self._on_rx_room is not None:
            self._on_rx_room()

    def _write_reg(self, reg: int, value: int) -> None:
        dlab = self._lcr & UART_LCR_DLAB
        if reg == UART_THR:
            if dlab:
                self._divisor = (self._divisor & 0xFF00) | value
            else:
                self._transmit(value)
        elif reg == UART_IER:
            if dlab:
                self._divisor = (self._divisor & 0x00FF) | (value << 8)
            else:
                self._write_ier(value)
        elif reg == UART_FCR:
            self._write_fcr(value)
        elif reg == UART_LCR:
            self._lcr = value
        elif reg == UART_MCR:
            self._write_mcr(value)
        elif reg == UART_SCR:
            self._scr = value
        # LSR and MSR are read-only here (writing them is a factory test mode).

    def _transmit(self, value: int) -> None:
        if self._mcr & UART_MCR_LOOP:
            if len(self._rx) < self._rx_capacity():
                self._rx.append(value)
            else:
                self._lsr_errors |= UART_LSR_OE
        else:
            self._output(bytes((value,)))
        # The byte has left THR at once, so THR is empty again: that is a new
        # THRE event (the write itself cleared the previous one).
        self._thr_ipending = bool(self._ier & UART_IER_ETBEI)
        self._update_irq()

    def _write_ier(self, value: int) -> None:
        old = self._ier
        self._ier = value & UART_IER_MASK
        # Enabling ETBEI while THR is empty raises THRE at once: Linux's
        # startup checks this (UART_BUG_THRE / UART_BUG_TXEN) and its
        # start_tx relies on it. THR is always empty here.
        if self._ier & UART_IER_ETBEI and not old & UART_IER_ETBEI:
            self._thr_ipending = True
        elif not self._ier & UART_IER_ETBEI:
            self._thr_ipending = False
        self._update_irq()

    def _write_fcr(self, value: int) -> None:
        enable = value & UART_FCR_ENABLE_FIFO
        had_data = bool(self._rx)
        if enable != self._fcr & UART_FCR_ENABLE_FIFO:
            self._rx.clear()  # changing FCR0 clears both FIFOs (datasheet, FCR)
        if value & UART_FCR_CLEAR_RCVR:
            self._rx.clear()
        self._fcr = value & (UART_FCR_ENABLE_FIFO | UART_FCR_DMA_SELECT | UART_FCR_TRIGGER_MASK)
        self._update_irq()
        if had_data and not self._rx:
            self._rx_room()

    def _write_mcr(self, value: int) -> None:
        value &= UART_MCR_MASK
        leaving_loop = self._mcr & UART_MCR_LOOP and not value & UART_MCR_LOOP
        self._mcr = value
        if value & UART_MCR_LOOP:
            # Loopback: the modem outputs feed the modem inputs
            # (DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD).
            lines = (
                (UART_MSR_DSR if value & UART_MCR_DTR else 0)
                | (UART_MSR_CTS if value & UART_MCR_RTS else 0)
                | (UART_MSR_RI if value & UART_MCR_OUT1 else 0)
                | (UART_MSR_DCD if value & UART_MCR_OUT2 else 0)
            )
        else:
            lines = _MSR_IDLE_LINES
        self._set_modem_lines(lines)
        self._update_irq()
        if leaving_loop:
            self._rx_room()

    def _set_modem_lines(self, lines: int) -> None:
        old = self._msr
        changed = (old ^ lines) & 0xF0
        deltas = old & UART_MSR_DELTAS
        if changed & UART_MSR_CTS:
            deltas |= UART_MSR_DCTS
        if changed & UART_MSR_DSR:
            deltas |= UART_MSR_DDSR
        if changed & UART_MSR_DCD:
            deltas |= UART_MSR_DDCD
        if old & UART_MSR_RI and not lines & UART_MSR_RI:
            deltas |= UART_MSR_TERI  # trailing edge only
        self._msr = lines | deltas

    def _lsr(self) -> int:
        lsr = UART_LSR_THRE | UART_LSR_TEMT | self._lsr_errors
        if self._rx:
            lsr |= UART_LSR_DR
        if self._lsr_errors & (UART_LSR_PE | UART_LSR_FE | UART_LSR_BI) and self._fcr & 1:
            lsr |= UART_LSR_FIFOE
        return lsr

    def _iir(self) -> int:
        fifo = UART_IIR_FIFO_ENABLED if self._fcr & UART_FCR_ENABLE_FIFO else 0
        return fifo | self._pending_id()

    def _pending_id(self) -> int:
        ier = self._ier
        if ier & UART_IER_ELSI and self._lsr_errors:
            return UART_IIR_RLSI
        if ier & UART_IER_ERBFI and self._rx:
            if not self._fcr & UART_FCR_ENABLE_FIFO:
                return UART_IIR_RDI
            trigger = _TRIGGER_LEVELS[self._fcr >> 6]
            return UART_IIR_RDI if len(self._rx) >= trigger else UART_IIR_CTI
        if ier & UART_IER_ETBEI and self._thr_ipending:
            return UART_IIR_THRI
        if ier & UART_IER_EDSSI and self._msr & UART_MSR_DELTAS:
            return UART_IIR_MSI
        return UART_IIR_NO_INT

    def _computed_level(self) -> bool:
        return (
            self._mcr & (UART_MCR_OUT2 | UART_MCR_LOOP) == UART_MCR_OUT2
            and self._pending_id() != UART_IIR_NO_INT
        )

    def _update_irq(self) -> None:
        level = self._computed_level()
        if level != self._irq_level:
            self._irq_level = level
            self._irq.set_level(level)

    # -- snapshot ------------------------------------------------------------------

    def save(self) -> SerialState:
        return SerialState(
            ier=self._ier,
            lcr=self._lcr,
            mcr=self._mcr,
            lsr_errors=self._lsr_errors,
            msr=self._msr,
            scr=self._scr,
            divisor=self._divisor,
            fcr=self._fcr,
            rx_fifo=bytes(self._rx),
            thr_ipending=self._thr_ipending,
        )

    def load_state(self, state: SerialState) -> None:
        self._ier = state.ier & UART_IER_MASK
        self._lcr = state.lcr & 0xFF
        self._mcr = state.mcr & UART_MCR_MASK
        self._lsr_errors = state.lsr_errors & UART_LSR_ERRORS
        self._msr = state.msr & 0xFF
        self._scr = state.scr & 0xFF
        self._divisor = state.divisor & 0xFFFF
        self._fcr = state.fcr & 0xFF
        self._rx = deque(state.rx_fifo[:UART_FIFO_SIZE])
        self._thr_ipending = state.thr_ipending
        # Drive the line to match the restored registers, whatever it was.
        self._irq_level = self._computed_level()
        self._irq.set_level(self._irq_level)

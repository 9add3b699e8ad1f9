"""Serial16550 against what Linux's 8250 driver does at probe and in operation."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite import state
from kvmlite.devices.legacy.serial import (
    UART_FCR,
    UART_FIFO_SIZE,
    UART_IER,
    UART_IIR,
    UART_LCR,
    UART_LSR,
    UART_MCR,
    UART_MSR,
    UART_RBR,
    UART_SCR,
    UART_THR,
    Serial16550,
    SerialState,
)
from kvmlite.testing.interrupts import RecordingInterrupt


class Uart:
    def __init__(self) -> None:
        self.irq = RecordingInterrupt()
        self.out: list[bytes] = []
        self.dev = Serial16550(self.irq, self.out.append)

    def inb(self, reg: int) -> int:
        return self.dev.read(reg, 1)[0]

    def outb(self, reg: int, value: int) -> None:
        self.dev.write(reg, bytes([value]))


@pytest.fixture
def u() -> Uart:
    return Uart()


def linux_startup(u: Uart) -> None:
    """The register writes of serial8250_do_startup + set_termios, in order."""
    u.outb(UART_FCR, 0x01)
    u.outb(UART_FCR, 0x07)  # clear FIFOs
    u.outb(UART_FCR, 0x00)
    u.inb(UART_LSR), u.inb(UART_RBR), u.inb(UART_IIR), u.inb(UART_MSR)
    assert u.inb(UART_LSR) != 0xFF
    u.outb(UART_LCR, 0x83)  # DLAB + 8N1
    u.outb(UART_RBR, 0x01)  # DLL: 115200
    u.outb(UART_IER, 0x00)  # DLM
    u.outb(UART_LCR, 0x03)
    u.outb(UART_FCR, 0x81)  # FIFO, trigger 8 (16550A's uart_config)
    u.outb(UART_MCR, 0x0B)  # DTR RTS OUT2
    u.outb(UART_IER, 0x05)  # RX data + line status


def test_probe_ier_scratch_test(u):
    # autoconfig(): IER keeps exactly its low four bits.
    u.outb(UART_IER, 0)
    assert u.inb(UART_IER) == 0
    u.outb(UART_IER, 0xFF)
    assert u.inb(UART_IER) == 0x0F
    # ... and IER_UUE (bit 6) does not stick, so it is not an XScale UART.
    assert not u.inb(UART_IER) & 0x40


def test_probe_loopback_msr(u):
    u.outb(UART_MCR, 0x10 | 0x0A)  # LOOP | RTS | OUT2
    assert u.inb(UART_MSR) & 0xF0 == 0x90  # CTS | DCD
    u.outb(UART_MCR, 0x10 | 0x05)  # LOOP | DTR | OUT1
    assert u.inb(UART_MSR) & 0xF0 == 0x60  # DSR | RI


def test_probe_identifies_16550a(u):
    u.outb(UART_LCR, 0xBF)
    u.outb(UART_IIR, 0)  # "EFR" write lands on FCR
    u.outb(UART_LCR, 0)
    u.outb(UART_FCR, 0x01)
    assert u.inb(UART_IIR) >> 6 == 3  # FIFOs work: 16550A
    # autoconfig_16550a: no EFR behind LCR=0x80 or 0xBF (offset 2 reads IIR, non-zero).
    u.outb(UART_LCR, 0x80)
    assert u.inb(UART_IIR) != 0
    u.outb(UART_LCR, 0xBF)
    assert u.inb(UART_IIR) != 0
    # Not a 16750: the 64-byte FIFO bit does not appear in IIR.
    u.outb(UART_LCR, 0)
    u.outb(UART_FCR, 0x01 | 0x20)
    assert not u.inb(UART_IIR) & 0x20
    # Not an NS SuperIO: IIR bit 4 never follows MCR.LOOP.
    u.outb(UART_MCR, 0x10)
    u.outb(UART_LCR, 0xE0)
    assert not u.inb(UART_IIR) & 0x10
    # FIFOs off: 16450-style IIR.
    u.outb(UART_LCR, 0)
    u.outb(UART_FCR, 0)
    assert u.inb(UART_IIR) == 0x01


def test_divisor_latch_and_scratch(u):
    u.outb(UART_LCR, 0x80)
    u.outb(0, 0x0C)
    u.outb(1, 0x02)
    assert (u.inb(0), u.inb(1)) == (0x0C, 0x02)
    u.outb(UART_LCR, 0x03)
    assert u.inb(UART_IER) == 0  # IER untouched by DLM writes
    assert u.dev.save().divisor == 0x20C
    u.outb(UART_SCR, 0x5A)
    assert u.inb(UART_SCR) == 0x5A
    assert u.inb(UART_LCR) == 0x03


def test_thre_interrupt_semantics_linux_checks(u):
    linux_startup(u)
    assert u.inb(UART_IIR) & 0x0F == 0x01
    # UART_BUG_THRE test: enabling THRI raises THRE; the IIR read clears it;
    # writing IER 0 then THRI again re-asserts it.
    u.outb(UART_IER, 0x02)
    assert u.irq.level
    assert u.inb(UART_IIR) & 0x0F == 0x02
    assert not u.irq.level
    assert u.inb(UART_IIR) & 0x0F == 0x01
    u.outb(UART_IER, 0)
    u.outb(UART_IER, 0x02)
    assert u.inb(UART_IIR) & 0x0F == 0x02
    # UART_BUG_TXEN test: LSR.TEMT set and IIR shows an interrupt.
    u.outb(UART_IER, 0)
    u.outb(UART_IER, 0x02)
    assert u.inb(UART_LSR) & 0x60 == 0x60
    assert not u.inb(UART_IIR) & 0x01


def test_transmit_and_thre_after_each_write(u):
    linux_startup(u)
    u.outb(UART_IER, 0x07)
    assert u.inb(UART_IIR) & 0x0F == 0x02
    for ch in b"hi\n":
        u.outb(UART_THR, ch)
        assert u.irq.level  # THR emptied again
    assert b"".join(u.out) == b"hi\n"
    assert u.inb(UART_IIR) & 0x0F == 0x02
    assert not u.irq.level
    u.outb(UART_IER, 0x05)  # stop_tx
    u.outb(UART_THR, ord("x"))
    assert not u.irq.level


def test_receive_fifo_trigger_and_timeout(u):
    linux_startup(u)  # trigger level 8
    assert u.dev.wants_input()
    assert u.dev.enqueue_input(b"abc") == 3
    assert u.irq.level
    assert u.inb(UART_IIR) & 0x0F == 0x0C  # below trigger: timeout indication
    assert u.dev.enqueue_input(b"defgh") == 5
    assert u.inb(UART_IIR) & 0x0F == 0x04
    got = bytearray()
    while u.inb(UART_LSR) & 0x01:
        got.append(u.inb(UART_RBR))
    assert got == b"abcdefgh"
    assert not u.irq.level
    assert u.inb(UART_IIR) == 0xC1


def test_input_is_bounded_never_lost(u):
    linux_startup(u)
    data = bytes(range(40))
    taken = u.dev.enqueue_input(data)
    assert taken == UART_FIFO_SIZE
    assert not u.dev.wants_input()
    assert u.dev.enqueue_input(data[taken:]) == 0
    assert u.inb(UART_RBR) == 0
    assert u.dev.wants_input()
    assert u.dev.enqueue_input(data[taken:]) == 1
    assert not u.inb(UART_LSR) & 0x02  # no overrun from host input


def test_fifo_disabled_holds_one_byte(u):
    assert u.dev.enqueue_input(b"xy") == 1
    u.outb(UART_IER, 0x01)
    assert u.inb(UART_IIR) == 0x04
    assert u.inb(UART_RBR) == ord("x")


def test_fcr_clear_and_toggle_empty_rx(u):
    u.outb(UART_FCR, 0x01)
    u.dev.enqueue_input(b"abc")
    u.outb(UART_FCR, 0x03)
    assert not u.inb(UART_LSR) & 0x01
    u.dev.enqueue_input(b"abc")
    u.outb(UART_FCR, 0x00)
    assert not u.inb(UART_LSR) & 0x01


def test_out2_gates_irq(u):
    u.outb(UART_MCR, 0)
    u.outb(UART_IER, 0x02)
    assert not u.irq.level
    assert u.inb(UART_IIR) & 0x0F == 0x02  # pending, just not on the bus
    u.outb(UART_IER, 0)
    u.outb(UART_IER, 0x02)
    u.outb(UART_MCR, 0x08)
    assert u.irq.level
    u.outb(UART_MCR, 0x00)
    assert not u.irq.level


def test_loopback_data_and_overrun(u):
    u.outb(UART_FCR, 0x01)
    u.outb(UART_MCR, 0x10 | 0x08)
    assert u.dev.enqueue_input(b"host") == 0  # input disconnected in loopback
    assert not u.dev.wants_input()
    u.outb(UART_IER, 0x05)
    for i in range(UART_FIFO_SIZE + 1):
        u.outb(UART_THR, i)
    assert u.out == []  # nothing reaches the host
    assert not u.irq.level  # OUT2 is forced inactive in loopback
    assert u.inb(UART_IIR) & 0x0F == 0x06  # overrun: line status first
    lsr = u.inb(UART_LSR)
    assert lsr & 0x03 == 0x03
    assert not u.inb(UART_LSR) & 0x02  # cleared by the read
    assert u.inb(UART_IIR) & 0x0F == 0x04
    assert [u.inb(UART_RBR) for _ in range(UART_FIFO_SIZE)] == list(range(UART_FIFO_SIZE))


def test_modem_status_interrupt(u):
    u.outb(UART_MCR, 0x0B)
    u.inb(UART_MSR)
    u.outb(UART_IER, 0x08)
    assert not u.irq.level
    u.outb(UART_MCR, 0x10 | 0x08)  # loop: DTR/RTS low -> DSR/CTS drop
    msr_iir = u.inb(UART_IIR)
    assert msr_iir & 0x0F == 0x00
    msr = u.inb(UART_MSR)
    assert msr & 0x03 == 0x03  # DCTS | DDSR
    assert u.inb(UART_MSR) & 0x0F == 0
    assert u.inb(UART_IIR) & 0x01


def test_normal_modem_lines_asserted(u):
    assert u.inb(UART_MSR) & 0xF0 == 0xB0


def test_priority_order(u):
    u.outb(UART_FCR, 0x01)
    u.outb(UART_MCR, 0x18)
    u.outb(UART_IER, 0x0F)
    for i in range(17):
        u.outb(UART_THR, i)  # overrun + data + THRE + modem deltas
    assert [u.inb(UART_IIR) & 0x0F for _ in range(1)] == [0x06]
    u.inb(UART_LSR)
    assert u.inb(UART_IIR) & 0x0F == 0x04
    while u.inb(UART_LSR) & 1:
        u.inb(UART_RBR)
    assert u.inb(UART_IIR) & 0x0F == 0x02
    assert u.inb(UART_IIR) & 0x0F == 0x00
    u.inb(UART_MSR)
    assert u.inb(UART_IIR) & 0x0F == 0x01


def test_wide_and_out_of_range_accesses(u):
    assert u.dev.read(UART_LSR, 2) == bytes([0x60, 0])
    assert u.dev.read(9, 1) == b"\xff"
    u.dev.write(9, b"\x01")
    u.dev.write(UART_SCR, b"")
    u.dev.write(UART_SCR, b"\x12\x34")
    assert u.inb(UART_SCR) == 0x12


def test_save_restore_round_trip(u):
    linux_startup(u)
    u.outb(UART_SCR, 0x42)
    u.dev.enqueue_input(b"pending")
    u.outb(UART_IER, 0x07)
    saved = u.dev.save()
    blob = state.dumps(saved)
    other = Uart()
    args = {"irq": other.irq, "output": other.out.append}
    other.dev = Serial16550.restore(args, state.loads(SerialState, blob))
    assert other.dev.save() == saved
    assert other.irq.level
    assert other.inb(UART_SCR) == 0x42
    assert bytes(other.inb(UART_RBR) for _ in range(7)) == b"pending"


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 9), st.integers(0, 255)), max_size=300))
def test_fuzz_registers_never_raise_and_invariants_hold(ops):
    u = Uart()
    for is_write, reg, value in ops:
        if is_write:
            u.dev.write(reg, bytes([value]))
        else:
            assert len(u.dev.read(reg, 1)) == 1
        s = u.dev.save()
        assert len(s.rx_fifo) <= UART_FIFO_SIZE
        assert u.irq.level == u.dev._computed_level()


def test_rx_room_callback():
    calls = []
    irq = RecordingInterrupt()
    dev = Serial16550(irq, lambda b: None, on_rx_room=lambda: calls.append(1))
    dev.write(UART_FCR, b"\x01")
    dev.enqueue_input(b"ab")
    dev.read(UART_RBR, 1)
    assert calls == []  # not empty yet
    dev.read(UART_RBR, 1)
    assert calls == [1]
    dev.read(UART_RBR, 1)  # reading an empty FIFO changes nothing
    assert calls == [1]
    dev.enqueue_input(b"c")
    dev.write(UART_FCR, b"\x03")
    assert calls == [1, 1]
    dev.write(UART_MCR, b"\x10")
    dev.write(UART_MCR, b"\x08")
    assert len(calls) == 3


def test_break_for_sysrq(u):
    linux_startup(u)
    assert u.dev.send_break()
    assert u.inb(UART_IIR) & 0x0F == 0x06  # line status (ELSI is on)
    lsr = u.inb(UART_LSR)
    assert lsr & 0x11 == 0x11  # BI with the zero character
    assert u.inb(UART_RBR) == 0
    assert not u.inb(UART_LSR) & 0x10
    u.outb(UART_MCR, 0x1B)
    assert not u.dev.send_break()


class Linux8250:
    """The interrupt-driven paths of Linux's 8250 driver (serial8250_handle_irq,
    serial8250_rx_chars, serial8250_tx_chars, start_tx/stop_tx), reduced."""

    def __init__(self, u: Uart) -> None:
        self.u = u
        self.ier = 0x05
        self.xmit = bytearray()
        self.rx = bytearray()
        self.irqs = 0

    def start_tx(self, data: bytes) -> None:
        self.xmit += data
        if not self.ier & 0x02:
            self.ier |= 0x02
            self.u.outb(UART_IER, self.ier)

    def handle_irq(self) -> bool:
        iir = self.u.inb(UART_IIR)
        if iir & 0x01:
            return False
        lsr = self.u.inb(UART_LSR)
        if lsr & 0x11:
            for _ in range(256):
                self.rx.append(self.u.inb(UART_RBR))
                lsr = self.u.inb(UART_LSR)
                if not lsr & 0x01:
                    break
        self.u.inb(UART_MSR)
        if lsr & 0x20 and self.ier & 0x02:
            for _ in range(16):
                if not self.xmit:
                    break
                self.u.outb(UART_THR, self.xmit.pop(0))
            if not self.xmit:
                self.ier &= ~0x02
                self.u.outb(UART_IER, self.ier)
        return True

    def interrupt(self) -> None:
        """serial8250_interrupt: loop until the port has nothing pending."""
        self.irqs += 1
        for _ in range(512):  # PASS_LIMIT
            if not self.handle_irq():
                return
        raise AssertionError("interrupt storm: PASS_LIMIT reached")


def test_linux_interrupt_driven_tx_and_rx(u):
    linux_startup(u)
    drv = Linux8250(u)
    message = bytes(range(256)) * 4
    incoming = b"typed at the console\r" * 5
    drv.start_tx(message)
    fed = 0
    for _ in range(10000):
        if fed < len(incoming) and u.dev.wants_input():
            fed += u.dev.enqueue_input(incoming[fed : fed + 7])
        if u.irq.level:
            drv.interrupt()
        elif fed == len(incoming) and not drv.xmit:
            break
    assert b"".join(u.out) == message
    assert bytes(drv.rx) == incoming
    assert not u.irq.level
    assert drv.irqs < len(message)  # batched: not an interrupt per byte

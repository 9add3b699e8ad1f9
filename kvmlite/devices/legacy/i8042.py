"""i8042 PS/2 keyboard controller, the parts Linux's drivers/input/serio/i8042.c uses.

Follows the IBM PC/AT keyboard controller interface (status register bits,
command byte, controller commands 0x20..0xFF) as documented in Linux's
i8042.h and the classic 8042 references, plus a minimal PS/2 keyboard that
answers the atkbd driver's probe (reset, get ID, set LEDs, scan set...).

Theory of operation
-------------------
Port 0x60 is data, port 0x64 status (read) / command (write). The controller
has one output buffer; what waits to go into it lives in two queues:
controller replies (command results, loop-back bytes, ACKs from the
keyboard) and keyboard data pushed by the host (``push_keyboard``), held back
while the keyboard port is disabled (command byte bit 4). Each queued byte
carries its status bits (AUXDATA for bytes "from the mouse port", TIMEOUT).

There is no mouse: a byte sent to the aux port (0xD4) answers 0xFE with
the TIMEOUT status bit, which Linux's serio/psmouse take as "no device"
without waiting. The aux loop-back command (0xD3) still works, as it is a
controller function, so i8042_check_aux and the MUX probe finish quickly.

IRQ 1 / IRQ 12: the keyboard line is high while the output buffer holds a
non-aux byte and command byte bit 0 is set; the aux line likewise with bit 1.

CPU reset: command 0xFE (pulse output port bit 0), any 0xF0..0xFF pulse with
bit 0 clear, or writing the output port (0xD1) with bit 0 clear calls the
``reset`` callback: Linux's ``reboot=k`` (the default fallback) uses 0xFE.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from kvmlite.devices.irq import IrqLine, NoInterrupt
from kvmlite.devices.legacy import scancodes
from kvmlite.devices.persist import Persist

I8042_DATA_PORT = 0x60
I8042_COMMAND_PORT = 0x64
#: One device can sit over 0x60..0x64 (offsets 0 and 4); 0x61..0x63 read all-ones.
I8042_PORT_RANGE = 5
I8042_KBD_IRQ = 1
I8042_AUX_IRQ = 12

# Status register (port 0x64, read).
I8042_STR_OBF = 0x01
I8042_STR_IBF = 0x02
I8042_STR_SYSFLAG = 0x04
I8042_STR_CMDDAT = 0x08  # last write was to the command port
I8042_STR_KEYLOCK = 0x10  # 1: keyboard not inhibited
I8042_STR_AUXDATA = 0x20
I8042_STR_TIMEOUT = 0x40
I8042_STR_PARITY = 0x80

# Command byte ("CTR").
I8042_CTR_KBDINT = 0x01
I8042_CTR_AUXINT = 0x02
I8042_CTR_SYSFLAG = 0x04
I8042_CTR_IGNKEYLOCK = 0x08
I8042_CTR_KBDDIS = 0x10
I8042_CTR_AUXDIS = 0x20
I8042_CTR_XLATE = 0x40

# Controller commands (port 0x64, write).
I8042_CMD_CTL_RCTR = 0x20
I8042_CMD_CTL_WCTR = 0x60
I8042_CMD_AUX_DISABLE = 0xA7
I8042_CMD_AUX_ENABLE = 0xA8
I8042_CMD_AUX_TEST = 0xA9
I8042_CMD_CTL_TEST = 0xAA
I8042_CMD_KBD_TEST = 0xAB
I8042_CMD_KBD_DISABLE = 0xAD
I8042_CMD_KBD_ENABLE = 0xAE
I8042_CMD_READ_INPUT = 0xC0
I8042_CMD_READ_OUTPUT = 0xD0
I8042_CMD_WRITE_OUTPUT = 0xD1
I8042_CMD_KBD_LOOP = 0xD2
I8042_CMD_AUX_LOOP = 0xD3
I8042_CMD_AUX_SEND = 0xD4
I8042_CMD_READ_TEST = 0xE0
I8042_CMD_PULSE_RESET = 0xFE

I8042_RET_CTL_TEST = 0x55
I8042_RET_PORT_OK = 0x00

# Output port: bit 0 is the CPU reset line (active low), bit 1 gate A20.
I8042_OUT_RESET = 0x01
I8042_OUT_A20 = 0x02

# Keyboard commands and replies (PS/2 keyboard protocol).
KBD_CMD_SET_LEDS = 0xED
KBD_CMD_ECHO = 0xEE
KBD_CMD_SCANSET = 0xF0
KBD_CMD_GET_ID = 0xF2
KBD_CMD_SET_RATE = 0xF3
KBD_CMD_ENABLE = 0xF4
KBD_CMD_RESET_DIS = 0xF5
KBD_CMD_RESET_DEF = 0xF6
KBD_CMD_RESET = 0xFF
KBD_REPLY_ACK = 0xFA
KBD_REPLY_RESEND = 0xFE
KBD_REPLY_POR = 0xAA  # power-on reset / self-test passed
KBD_ID = (0xAB, 0x83)  # MF2 keyboard

#: Reset value of the command byte: both port interrupts on, system flag,
#: set-2 -> set-1 translation (what a PC BIOS leaves behind).
DEFAULT_CTR = I8042_CTR_KBDINT | I8042_CTR_AUXINT | I8042_CTR_SYSFLAG | I8042_CTR_XLATE
#: Keyboard bytes waiting for the guest beyond this are dropped (a real
#: keyboard's buffer is 16 bytes; a stuck guest must not grow host memory).
KBD_QUEUE_LIMIT = 256


@dataclass(frozen=True)
class I8042State:
    ctr: int
    status_flags: int  # CMDDAT and SYSFLAG as last set
    out: int | None  # byte in the output buffer, None when empty
    out_status: int  # AUXDATA/TIMEOUT bits of that byte
    last: int  # what a read of an empty output buffer returns
    replies: tuple[tuple[int, int], ...]
    kbd_queue: bytes
    pending_cmd: int | None  # controller command waiting for its data byte
    kbd_pending_cmd: int | None  # keyboard command waiting for its parameter
    output_port: int
    scan_set: int
    kbd_enabled: bool


class I8042(Persist[I8042State]):
    """The PS/2 controller at 0x60/0x64 with a minimal keyboard and no mouse."""

    State = I8042State
    name = "i8042"

    def __init__(
        self,
        reset: Callable[[], None],
        kbd_irq: IrqLine | None = None,
        aux_irq: IrqLine | None = None,
    ) -> None:
        self._reset = reset
        self._kbd_irq = kbd_irq or NoInterrupt()
        self._aux_irq = aux_irq or NoInterrupt()
        self._kbd_level = False
        self._aux_level = False
        self._ctr = DEFAULT_CTR
        self._status_flags = I8042_STR_SYSFLAG
        self._out: int | None = None
        self._out_status = 0
        self._last = 0
        self._replies: deque[tuple[int, int]] = deque()
        self._kbd_queue: deque[int] = deque()
        self._pending_cmd: int | None = None
        self._kbd_pending_cmd: int | None = None
        self._output_port = I8042_OUT_RESET | I8042_OUT_A20
        self._scan_set = 2
        self._kbd_enabled = True
        #: Bus adapters for builders that place 0x60 and 0x64 separately.
        self.data_port = _Port(self, 0)
        self.command_port = _Port(self, 4)

    # -- host side ---------------------------------------------------------------

    @property
    def translating(self) -> bool:
        """Whether the guest left set-2 -> set-1 translation on (command byte bit 6).

        ``key()`` translates (set 2 -> set 1) when this is True, as a PC's
        8042 does; ``push_keyboard`` queues raw bytes untranslated.
        """
        return bool(self._ctr & I8042_CTR_XLATE)

    @property
    def scan_set(self) -> int:
        """The scan code set the guest selected on the keyboard (0xF0 command)."""
        return self._scan_set

    def key(self, keycode: int, down: bool) -> None:
        """A key pressed or released (set-1 number, +0x80 for 0xE0 keys; see scancodes.py).

        The keyboard sends it in its scan code set (2 unless the guest chose 1;
        set 3 is answered as set 2), and the controller translates it to set 1
        when the command byte says so. Unknown key numbers are ignored.
        """
        if not scancodes.known(keycode):
            return
        if self._scan_set == 1:
            data = scancodes.set1_bytes(keycode, down)
        else:
            data = scancodes.set2_bytes(keycode, down)
        if self.translating:
            data = scancodes.translate(data)
        self.push_keyboard(data)

    def push_keyboard(self, data: bytes) -> None:
        """Queue bytes from the keyboard as they are (``key()`` makes them from a key)."""
        if not self._kbd_enabled:
            return  # a disabled keyboard does not scan
        room = KBD_QUEUE_LIMIT - len(self._kbd_queue)
        self._kbd_queue.extend(data[: max(room, 0)])
        self._fill()

    # -- guest side ----------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        if offset == 0:
            value = self._read_data()
        elif offset == 4:
            value = self._status()
        else:
            value = 0xFF
        return bytes((value,)) + b"\x00" * (size - 1) if size > 0 else b""

    def write(self, offset: int, data: bytes) -> None:
        if not data:
            return
        if offset == 0:
            self._write_data(data[0])
        elif offset == 4:
            self._write_command(data[0])

    def _status(self) -> int:
        status = self._status_flags | I8042_STR_KEYLOCK
        if self._out is not None:
            status |= I8042_STR_OBF | self._out_status
        return status

    def _read_data(self) -> int:
        if self._out is None:
            return self._last
        value = self._out
        self._out = None
        self._out_status = 0
        self._fill()
        return value

    def _reply(self, value: int, status: int = 0) -> None:
        self._replies.append((value & 0xFF, status))
        self._fill()

    def _fill(self) -> None:
        """Move the next waiting byte into the empty output buffer, then drive the IRQs."""
        if self._out is None:
            if self._replies:
                self._out, self._out_status = self._replies.popleft()
                self._last = self._out
            elif self._kbd_queue and not self._ctr & I8042_CTR_KBDDIS:
                self._out, self._out_status = self._kbd_queue.popleft(), 0
                self._last = self._out
        self._update_irq()

    def _levels(self) -> tuple[bool, bool]:
        has = self._out is not None
        aux = bool(self._out_status & I8042_STR_AUXDATA)
        kbd_level = has and not aux and bool(self._ctr & I8042_CTR_KBDINT)
        aux_level = has and aux and bool(self._ctr & I8042_CTR_AUXINT)
        return kbd_level, aux_level

    def _update_irq(self) -> None:
        kbd_level, aux_level = self._levels()
        if kbd_level != self._kbd_level:
            self._kbd_level = kbd_level
            self._kbd_irq.set_level(kbd_level)
        if aux_level != self._aux_level:
            self._aux_level = aux_level
            self._aux_irq.set_level(aux_level)

    def _write_command(self, cmd: int) -> None:
        self._status_flags |= I8042_STR_CMDDAT
        self._pending_cmd = None
        if cmd == I8042_CMD_CTL_RCTR:
            self._reply(self._ctr)
        elif cmd in (
            I8042_CMD_CTL_WCTR,
            I8042_CMD_WRITE_OUTPUT,
            I8042_CMD_KBD_LOOP,
            I8042_CMD_AUX_LOOP,
            I8042_CMD_AUX_SEND,
        ):
            self._pending_cmd = cmd
        elif cmd == I8042_CMD_CTL_TEST:
            self._reply(I8042_RET_CTL_TEST)
        elif cmd in (I8042_CMD_KBD_TEST, I8042_CMD_AUX_TEST):
            self._reply(I8042_RET_PORT_OK)
        elif cmd == I8042_CMD_AUX_DISABLE:
            self._set_ctr(self._ctr | I8042_CTR_AUXDIS)
        elif cmd == I8042_CMD_AUX_ENABLE:
            self._set_ctr(self._ctr & ~I8042_CTR_AUXDIS)
        elif cmd == I8042_CMD_KBD_DISABLE:
            self._set_ctr(self._ctr | I8042_CTR_KBDDIS)
        elif cmd == I8042_CMD_KBD_ENABLE:
            self._set_ctr(self._ctr & ~I8042_CTR_KBDDIS)
        elif cmd == I8042_CMD_READ_INPUT:
            self._reply(0x80)  # keyboard not inhibited (keylock switch open)
        elif cmd == I8042_CMD_READ_OUTPUT:
            self._reply(self._output_port)
        elif cmd == I8042_CMD_READ_TEST:
            self._reply(0)
        elif cmd >= 0xF0:
            # Pulse output port bits 0..3 low for 6 us; bit 0 is the reset line.
            if not cmd & I8042_OUT_RESET:
                self._reset()
        # Other commands (password, MUX 0x90..0x93, vendor ones) are ignored.

    def _set_ctr(self, value: int) -> None:
        self._ctr = value & 0x7F
        if value & I8042_CTR_SYSFLAG:
            self._status_flags |= I8042_STR_SYSFLAG
        else:
            self._status_flags &= ~I8042_STR_SYSFLAG
        self._fill()  # enabling the keyboard port may release queued bytes

    def _write_data(self, value: int) -> None:
        self._status_flags &= ~I8042_STR_CMDDAT
        cmd, self._pending_cmd = self._pending_cmd, None
        if cmd is None:
            self._keyboard_command(value)
        elif cmd == I8042_CMD_CTL_WCTR:
            self._set_ctr(value)
        elif cmd == I8042_CMD_WRITE_OUTPUT:
            self._output_port = value
            if not value & I8042_OUT_RESET:
                self._reset()
        elif cmd == I8042_CMD_KBD_LOOP:
            self._reply(value)
        elif cmd == I8042_CMD_AUX_LOOP:
            self._reply(value, I8042_STR_AUXDATA)
        elif cmd == I8042_CMD_AUX_SEND:
            # No mouse on the aux port: the controller times out.
            self._reply(KBD_REPLY_RESEND, I8042_STR_AUXDATA | I8042_STR_TIMEOUT)

    def _keyboard_command(self, value: int) -> None:
        """A byte sent to the keyboard: the minimal PS/2 keyboard's answers."""
        pending, self._kbd_pending_cmd = self._kbd_pending_cmd, None
        if pending is not None:
            if pending == KBD_CMD_SCANSET and value == 0:
                self._reply(KBD_REPLY_ACK)
                self._reply(self._scan_set)
                return
            if pending == KBD_CMD_SCANSET and value in (1, 2, 3):
                self._scan_set = value
            self._reply(KBD_REPLY_ACK)
            return
        if value in (KBD_CMD_SET_LEDS, KBD_CMD_SCANSET, KBD_CMD_SET_RATE):
            self._kbd_pending_cmd = value
            self._reply(KBD_REPLY_ACK)
        elif value == KBD_CMD_ECHO:
            self._reply(KBD_CMD_ECHO)
        elif value == KBD_CMD_GET_ID:
            self._reply(KBD_REPLY_ACK)
            for b in KBD_ID:
                self._reply(b)
        elif value == KBD_CMD_ENABLE:
            self._kbd_enabled = True
            self._reply(KBD_REPLY_ACK)
        elif value == KBD_CMD_RESET_DIS:
            self._kbd_enabled = False
            self._kbd_queue.clear()
            self._reply(KBD_REPLY_ACK)
        elif value == KBD_CMD_RESET_DEF:
            self._reply(KBD_REPLY_ACK)
        elif value == KBD_CMD_RESET:
            self._kbd_queue.clear()
            self._kbd_enabled = True
            self._scan_set = 2
            self._reply(KBD_REPLY_ACK)
            self._reply(KBD_REPLY_POR)
        elif 0xF7 <= value <= 0xFD:
            self._reply(KBD_REPLY_ACK)  # set-3 key type commands: accept, ignore
        else:
            self._reply(KBD_REPLY_RESEND)

    # -- snapshot --------------------------------------------------------------------

    def save(self) -> I8042State:
        return I8042State(
            ctr=self._ctr,
            status_flags=self._status_flags,
            out=self._out,
            out_status=self._out_status,
            last=self._last,
            replies=tuple(self._replies),
            kbd_queue=bytes(self._kbd_queue),
            pending_cmd=self._pending_cmd,
            kbd_pending_cmd=self._kbd_pending_cmd,
            output_port=self._output_port,
            scan_set=self._scan_set,
            kbd_enabled=self._kbd_enabled,
        )

    def load_state(self, state: I8042State) -> None:
        self._ctr = state.ctr & 0x7F
        self._status_flags = state.status_flags & (I8042_STR_CMDDAT | I8042_STR_SYSFLAG)
        self._out = None if state.out is None else state.out & 0xFF
        self._out_status = state.out_status & (I8042_STR_AUXDATA | I8042_STR_TIMEOUT)
        self._last = state.last & 0xFF
        self._replies = deque((v & 0xFF, s & 0xFF) for v, s in state.replies)
        self._kbd_queue = deque(state.kbd_queue[:KBD_QUEUE_LIMIT])
        self._pending_cmd = state.pending_cmd
        self._kbd_pending_cmd = state.kbd_pending_cmd
        self._output_port = state.output_port & 0xFF
        self._scan_set = state.scan_set
        self._kbd_enabled = state.kbd_enabled
        # Drive both lines to match the restored buffer, whatever they were.
        self._kbd_level, self._aux_level = self._levels()
        self._kbd_irq.set_level(self._kbd_level)
        self._aux_irq.set_level(self._aux_level)


class _Port:
    """One of the controller's two ports as a one-byte bus device."""

    def __init__(self, controller: I8042, offset: int) -> None:
        self._controller = controller
        self._offset = offset
        self.name = f"i8042@{I8042_DATA_PORT + offset:#x}"

    def read(self, offset: int, size: int) -> bytes:
        return self._controller.read(self._offset + offset, size)

    def write(self, offset: int, data: bytes) -> None:
        self._controller.write(self._offset + offset, data)

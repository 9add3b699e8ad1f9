"""I8042 driven the way Linux's i8042.c and atkbd.c drive it."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite import state
from kvmlite.bus import Bus
from kvmlite.devices.legacy.i8042 import (
    I8042,
    I8042_COMMAND_PORT,
    I8042_DATA_PORT,
    I8042_PORT_RANGE,
    I8042_STR_AUXDATA,
    I8042_STR_OBF,
    I8042_STR_TIMEOUT,
    I8042State,
)
from kvmlite.testing.interrupts import RecordingInterrupt


class Ctl:
    def __init__(self, saved: I8042State | None = None) -> None:
        self.resets = 0
        self.kbd = RecordingInterrupt()
        self.aux = RecordingInterrupt()
        args = {"reset": self.reset, "kbd_irq": self.kbd, "aux_irq": self.aux}
        self.dev = I8042(**args) if saved is None else I8042.restore(args, saved)
        self.bus = Bus("pio")
        self.bus.insert(self.dev, I8042_DATA_PORT, I8042_PORT_RANGE)

    def reset(self) -> None:
        self.resets += 1

    def status(self) -> int:
        return self.bus.read(I8042_COMMAND_PORT, 1)[0]

    def data(self) -> int:
        return self.bus.read(I8042_DATA_PORT, 1)[0]

    def command(self, cmd: int, params: bytes = b"", nreceive: int = 0) -> list[int]:
        """Linux's __i8042_command: fails (like a timeout) when a reply is missing."""
        self.bus.write(I8042_COMMAND_PORT, bytes([cmd]))
        for p in params:
            self.bus.write(I8042_DATA_PORT, bytes([p]))
        out = []
        for _ in range(nreceive):
            assert self.status() & I8042_STR_OBF, f"command {cmd:#x} timed out"
            out.append(self.data())
        return out

    def flush(self) -> list[int]:
        got = []
        while self.status() & I8042_STR_OBF and len(got) < 16:
            got.append(self.data())
        return got


@pytest.fixture
def c() -> Ctl:
    return Ctl()


def test_linux_controller_probe(c):
    assert c.flush() == []
    assert c.command(0xAA, nreceive=1) == [0x55]
    ctr = c.command(0x20, nreceive=1)[0]
    assert ctr == c.command(0x20, nreceive=1)[0]
    assert ctr & 0x40  # translation on, as a BIOS leaves it
    c.command(0x60, bytes([ctr & ~0x03]))
    assert c.command(0x20, nreceive=1) == [ctr & ~0x03]


def test_aux_loop_sets_auxdata_and_aux_irq(c):
    c.command(0x60, bytes([0x47]))
    c.bus.write(I8042_COMMAND_PORT, b"\xd3")
    c.bus.write(I8042_DATA_PORT, b"\x5a")
    assert c.status() & (I8042_STR_OBF | I8042_STR_AUXDATA) == 0x21
    assert c.aux.level and not c.kbd.level
    assert c.data() == 0x5A
    assert not c.aux.level


def test_mux_probe_fails_as_on_a_plain_controller(c):
    # i8042_set_mux_mode: F0 and 56 loop back; A4 looping back too means "no MUX".
    assert c.command(0xD3, b"\xf0", 1) == [0xF0]
    assert c.command(0xD3, b"\x56", 1) == [0x56]
    assert c.command(0xD3, b"\xa4", 1) == [0xA4]


def test_port_enable_disable_in_ctr(c):
    c.command(0xA7)
    assert c.command(0x20, nreceive=1)[0] & 0x20
    c.command(0xA8)
    assert not c.command(0x20, nreceive=1)[0] & 0x20
    c.command(0xAD)
    assert c.command(0x20, nreceive=1)[0] & 0x10
    c.command(0xAE)
    assert not c.command(0x20, nreceive=1)[0] & 0x10
    assert c.command(0xAB, nreceive=1) == [0]
    assert c.command(0xA9, nreceive=1) == [0]


def test_aux_send_times_out_fast(c):
    c.bus.write(I8042_COMMAND_PORT, b"\xd4")
    c.bus.write(I8042_DATA_PORT, b"\xff")
    st_ = c.status()
    assert st_ & I8042_STR_TIMEOUT and st_ & I8042_STR_AUXDATA
    assert c.data() == 0xFE


def test_atkbd_probe(c):
    c.bus.write(I8042_DATA_PORT, b"\xf2")
    assert c.flush() == [0xFA, 0xAB, 0x83]
    c.bus.write(I8042_DATA_PORT, b"\xff")
    assert c.flush() == [0xFA, 0xAA]
    c.bus.write(I8042_DATA_PORT, b"\xf0")
    c.bus.write(I8042_DATA_PORT, b"\x02")
    assert c.flush() == [0xFA, 0xFA]
    c.bus.write(I8042_DATA_PORT, b"\xf0")
    c.bus.write(I8042_DATA_PORT, b"\x00")
    assert c.flush() == [0xFA, 0xFA, 0x02]
    c.bus.write(I8042_DATA_PORT, b"\xed")
    c.bus.write(I8042_DATA_PORT, b"\x07")
    assert c.flush() == [0xFA, 0xFA]
    c.bus.write(I8042_DATA_PORT, b"\xee")
    assert c.flush() == [0xEE]
    c.bus.write(I8042_DATA_PORT, b"\x12")
    assert c.flush() == [0xFE]


def test_keyboard_data_irq_and_port_disable(c):
    c.dev.push_keyboard(b"\x1e")
    assert c.kbd.level
    assert c.data() == 0x1E
    c.command(0xAD)  # keyboard port disabled: the next byte waits
    c.dev.push_keyboard(b"\x9e")
    assert c.flush() == []
    assert not c.kbd.level
    c.command(0xAE)
    assert c.kbd.level
    assert c.data() == 0x9E
    assert not c.kbd.level
    # CTR without KBDINT: data but no IRQ.
    c.command(0x60, b"\x44")
    c.dev.push_keyboard(b"\x01")
    assert not c.kbd.level and c.status() & I8042_STR_OBF


def test_reset_line(c):
    c.command(0xFF)  # pulse nothing
    assert c.resets == 0
    c.command(0xFE)
    assert c.resets == 1
    c.command(0xD1, b"\x03")  # A20 on, reset high: no reset
    assert c.resets == 1
    assert c.command(0xD0, nreceive=1) == [0x03]
    c.command(0xD1, b"\x02")
    assert c.resets == 2


def test_empty_buffer_read_repeats_last_and_odd_ports(c):
    c.command(0xAA, nreceive=1)
    assert c.data() == 0x55
    assert c.bus.read(0x61, 1) == b"\xff"
    c.bus.write(0x62, b"\x00")
    assert c.bus.read(0x60, 2) == b"\x55\x00"


def test_separate_port_adapters():
    resets = []
    dev = I8042(lambda: resets.append(1))
    bus = Bus("pio")
    bus.insert(dev.data_port, 0x60, 1)
    bus.insert(dev.command_port, 0x64, 1)
    bus.write(0x64, b"\xaa")
    assert bus.read(0x64, 1)[0] & 1
    assert bus.read(0x60, 1) == b"\x55"
    bus.write(0x64, b"\xfe")
    assert resets == [1]


def test_save_restore_round_trip(c):
    c.command(0x60, b"\x47")
    c.dev.push_keyboard(b"\x10\x90")
    c.bus.write(I8042_COMMAND_PORT, b"\xd1")  # pending controller command
    saved = c.dev.save()
    other = Ctl(state.loads(I8042State, state.dumps(saved)))
    assert other.dev.save() == saved
    assert other.kbd.level
    assert other.flush() == [0x10, 0x90]
    other.bus.write(I8042_DATA_PORT, b"\x00")  # completes the 0xD1 -> reset
    assert other.resets == 1


@given(st.lists(st.tuples(st.sampled_from([0, 1, 2, 3, 4]), st.booleans(), st.integers(0, 255))))
def test_fuzz_never_raises(ops):
    c = Ctl()
    for off, is_write, value in ops:
        if is_write:
            c.dev.write(off, bytes([value]))
        else:
            assert len(c.dev.read(off, 1)) == 1
    assert len(c.dev.save().kbd_queue) <= 256


def test_translation_and_scan_set_visible_to_host(c):
    assert c.dev.translating and c.dev.scan_set == 2
    c.command(0x60, b"\x07")
    assert not c.dev.translating
    c.bus.write(I8042_DATA_PORT, b"\xf0")
    c.bus.write(I8042_DATA_PORT, b"\x03")
    assert c.dev.scan_set == 3

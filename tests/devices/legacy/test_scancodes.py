"""Scan code sets and the 8042 translation; keys through the i8042 model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvmlite.devices.legacy import scancodes as sc
from kvmlite.devices.legacy.i8042 import I8042, I8042_CTR_XLATE
from kvmlite.vnc.keymap import keysym_to_key

ALL_KEYS = sorted(sc.SET1_TO_SET2) + sorted(0x80 | k for k in sc.SET1_TO_SET2_E0)


def test_known_values() -> None:
    # PC/AT reference values: A, Enter, F7 (set 2's odd 0x83), keypad Enter, Up
    assert sc.set2_bytes(0x1E, True) == b"\x1c"
    assert sc.set2_bytes(0x1E, False) == b"\xf0\x1c"
    assert sc.set2_bytes(0x41, True) == b"\x83"
    assert sc.set2_bytes(0x9C, False) == b"\xe0\xf0\x5a"
    assert sc.set1_bytes(0xC8, False) == b"\xe0\xc8"


def test_translation_of_set2_gives_set1_for_every_key() -> None:
    for key in ALL_KEYS:
        for down in (True, False):
            assert sc.translate(sc.set2_bytes(key, down)) == sc.set1_bytes(key, down), hex(key)


def _read_all(kbd: I8042) -> bytes:
    out = bytearray()
    while kbd.read(4, 1)[0] & 1:
        out += kbd.read(0, 1)
    return bytes(out)


def test_i8042_key_translated_by_default_and_raw_set2_without() -> None:
    kbd = I8042(reset=lambda: None)
    kbd.key(0x1E, True)
    kbd.key(0x1E, False)
    assert _read_all(kbd) == b"\x1e\x9e"
    kbd.write(4, b"\x20")
    ctr = _read_all(kbd)[0]
    kbd.write(4, b"\x60")
    kbd.write(0, bytes((ctr & ~I8042_CTR_XLATE,)))
    kbd.key(0xC8, False)
    assert _read_all(kbd) == b"\xe0\xf0\x75"
    kbd.write(0, b"\xf0")  # select scan set 1
    kbd.write(0, b"\x01")
    assert _read_all(kbd) == b"\xfa\xfa"
    kbd.key(0x1E, True)
    assert _read_all(kbd) == b"\x1e"
    kbd.key(0x7F, True)  # no such key: nothing
    assert _read_all(kbd) == b""


@given(st.integers(0, 0x1FF), st.booleans())
def test_any_key_number_is_safe(key: int, down: bool) -> None:
    kbd = I8042(reset=lambda: None)
    kbd.key(key, down)
    data = _read_all(kbd)
    assert (data != b"") == sc.known(key)


def test_keysyms() -> None:
    assert keysym_to_key(ord("a")) == keysym_to_key(ord("A")) == 0x1E
    assert keysym_to_key(ord("!")) == keysym_to_key(ord("1")) == 0x02
    assert keysym_to_key(ord("|")) == keysym_to_key(ord("\\")) == 0x2B
    assert keysym_to_key(ord("`")) == 0x29 and keysym_to_key(ord("/")) == 0x35
    assert keysym_to_key(0xFF0D) == 0x1C and keysym_to_key(0xFF52) == 0xC8
    assert keysym_to_key(0xFFBE) == 0x3B and keysym_to_key(0xFFC9) == 0x58
    assert keysym_to_key(0x20AC) is None  # the euro sign: not on a US keyboard
    for key in {keysym_to_key(k) for k in range(0x10000)} - {None}:
        assert sc.known(key), hex(key)

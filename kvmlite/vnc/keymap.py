"""X11 keysyms (what an RFB KeyEvent carries, RFC 6143 §7.5.4) -> PC key numbers.

Key numbers are set-1 make codes, +0x80 for the 0xE0 keys
(kvmlite/devices/legacy/scancodes.py). The map is the US layout by key
position: a keysym and its shifted twin ('a'/'A', '1'/'!') name the same
key, because the viewer sends its Shift key as a key event of its own. A
viewer that speaks QEMU's extended key event sends the key number itself,
and no keymap is involved at all.
"""

from __future__ import annotations

_ROWS = {
    "1234567890-=": 0x02,
    "qwertyuiop[]": 0x10,
    "asdfghjkl;'`": 0x1E,
    "zxcvbnm,./": 0x2C,
}
_SHIFTED = dict(zip('!@#$%^&*()_+{}:"~<>?|', "1234567890-=[];'`,./\\", strict=True))

#: Non-character keysyms (X11 keysymdef.h).
SPECIAL = {
    0xFF08: 0x0E,  # BackSpace
    0xFF09: 0x0F,  # Tab
    0xFF0D: 0x1C,  # Return
    0xFF1B: 0x01,  # Escape
    0xFF14: 0x46,  # Scroll_Lock
    0xFF50: 0xC7,  # Home
    0xFF51: 0xCB,  # Left
    0xFF52: 0xC8,  # Up
    0xFF53: 0xCD,  # Right
    0xFF54: 0xD0,  # Down
    0xFF55: 0xC9,  # Page_Up
    0xFF56: 0xD1,  # Page_Down
    0xFF57: 0xCF,  # End
    0xFF63: 0xD2,  # Insert
    0xFF67: 0xDD,  # Menu
    0xFF7F: 0x45,  # Num_Lock
    0xFF8D: 0x9C,  # KP_Enter
    0xFFAA: 0x37,  # KP_Multiply
    0xFFAB: 0x4E,  # KP_Add
    0xFFAD: 0x4A,  # KP_Subtract
    0xFFAE: 0x53,  # KP_Decimal
    0xFFAF: 0xB5,  # KP_Divide
    0xFFE1: 0x2A,  # Shift_L
    0xFFE2: 0x36,  # Shift_R
    0xFFE3: 0x1D,  # Control_L
    0xFFE4: 0x9D,  # Control_R
    0xFFE5: 0x3A,  # Caps_Lock
    0xFFE9: 0x38,  # Alt_L
    0xFFEA: 0xB8,  # Alt_R
    0xFE03: 0xB8,  # ISO_Level3_Shift (AltGr)
    0xFFEB: 0xDB,  # Super_L
    0xFFEC: 0xDC,  # Super_R
    0xFFFF: 0xD3,  # Delete
    0x0020: 0x39,  # space
    0x005C: 0x2B,  # backslash
}
#: KP_0..KP_9
_KEYPAD = (0x52, 0x4F, 0x50, 0x51, 0x4B, 0x4C, 0x4D, 0x47, 0x48, 0x49)
#: F1..F12 are 0xFFBE..0xFFC9.
_FKEYS = (0x3B, 0x3C, 0x3D, 0x3E, 0x3F, 0x40, 0x41, 0x42, 0x43, 0x44, 0x57, 0x58)


def _build() -> dict[int, int]:
    table = dict(SPECIAL)
    for chars, first in _ROWS.items():
        for i, ch in enumerate(chars):
            table[ord(ch)] = first + i
    for ch in "abcdefghijklmnopqrstuvwxyz":
        table[ord(ch.upper())] = table[ord(ch)]
    for shifted, base in _SHIFTED.items():
        table[ord(shifted)] = table[ord(base)]
    for i, code in enumerate(_KEYPAD):
        table[0xFFB0 + i] = code
    for i, code in enumerate(_FKEYS):
        table[0xFFBE + i] = code
    return table


KEYSYM_TO_KEY = _build()


def keysym_to_key(keysym: int) -> int | None:
    """The key number for ``keysym``, or None for a keysym not on a US keyboard."""
    return KEYSYM_TO_KEY.get(keysym)


def qemu_keycode_to_key(keycode: int) -> int | None:
    """A QEMU extended key event's keycode (XT, 0x80 bit for 0xE0 keys) as a key number."""
    return keycode if 0 < keycode < 0x100 else None

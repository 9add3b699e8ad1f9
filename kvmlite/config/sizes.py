"""Sizes as users write them: QEMU's ``64``, ``64M``, ``1G``, ``512k``."""

from __future__ import annotations

import re

from kvmlite.errors import ConfigError

MIB = 1 << 20


def parse_size(text: str, *, default_unit: str = "M") -> int:
    """Parse a QEMU-style size: '64', '64M', '1G', '512k' -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([bBkKmMgGtT]?)(i?[bB])?\s*", text)
    if not m:
        raise ConfigError(f"bad size {text!r}: use a number with an optional K, M, G or T suffix")
    unit = (m.group(2) or default_unit).upper()
    return int(m.group(1)) << {"B": 0, "K": 10, "M": 20, "G": 30, "T": 40}[unit]

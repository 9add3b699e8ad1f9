"""Human sizes as qemu-img reads and prints them (1024-based suffixes)."""

from __future__ import annotations

from kvmlite.errors import ConfigError

_SUFFIX = {"": 0, "B": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}


def parse_size(text: str) -> int:
    """'10G', '512M', '64k', '1048576' -> bytes."""
    t = text.strip()
    num = t.rstrip("bBkKmMgGtTpPeE")
    suffix = t[len(num) :].upper()
    try:
        value = float(num) if "." in num else int(num)
    except ValueError:
        raise ConfigError(
            f"invalid size {text!r}: use a number with an optional k/M/G/T suffix"
        ) from None
    if suffix not in _SUFFIX or value < 0:
        raise ConfigError(f"invalid size {text!r}: use a number with an optional k/M/G/T suffix")
    return int(value * (1 << _SUFFIX[suffix]))


def human(n: int) -> str:
    """1073741824 -> '1 GiB' (qemu-img style)."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    value = float(n)
    i = 0
    while value >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    if i == 0:
        return f"{n} B"
    return f"{value:.3g} {units[i]}"

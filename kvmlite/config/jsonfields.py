"""Checked access to JSON objects from users: unknown fields and wrong types are
refused with a message that names the field (DESIGN.md rule 7).

Used by the Firecracker translation (kvmlite/config/firecracker.py), whose
resources are JSON objects in Firecracker's API definition; like Firecracker
(serde's ``deny_unknown_fields``), a field the definition does not know is an
error, not something silently ignored. ``null`` counts as "not given", as it
does for Firecracker's optional fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from kvmlite.errors import ConfigError

T = TypeVar("T")

_JSON_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


def json_type(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def obj(value: Any, where: str) -> dict[str, Any]:
    """``value`` must be a JSON object."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected an object, got {json_type(value)}")
    return value


def check_keys(
    value: dict[str, Any], where: str, known: Iterable[str], required: Iterable[str] = ()
) -> None:
    """Refuse fields outside ``known`` and missing (or null) ``required`` ones."""
    known = set(known)
    for key in value:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown field {key!r} (known fields: {', '.join(sorted(known))})"
            )
    for key in required:
        if value.get(key) is None:
            raise ConfigError(f"{where}: missing field {key!r}")


def get(value: dict[str, Any], key: str, typ: type[T], where: str, default: T) -> T:
    """``value[key]`` checked to be a ``typ`` (bool is not an integer), or ``default``."""
    item = value.get(key)
    if item is None:
        return default
    ok = isinstance(item, typ) and not (typ is int and isinstance(item, bool))
    if not ok:
        raise ConfigError(
            f"{where}.{key}: expected {_JSON_NAMES.get(typ, typ.__name__)}, got {json_type(item)}"
        )
    return item


def get_int(
    value: dict[str, Any], key: str, where: str, default: int, lo: int = 0, hi: int = 2**64 - 1
) -> int:
    number = get(value, key, int, where, default)
    if not lo <= number <= hi:
        raise ConfigError(f"{where}.{key}: {number} is out of range ({lo} to {hi})")
    return number


def get_enum(
    value: dict[str, Any], key: str, where: str, choices: Iterable[str], default: str
) -> str:
    text = get(value, key, str, where, default)
    choices = tuple(choices)
    if text not in choices:
        raise ConfigError(f"{where}.{key}: {text!r} is not one of {', '.join(choices)}")
    return text

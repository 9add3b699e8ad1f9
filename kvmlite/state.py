"""Serialising device and machine state (DESIGN.md rule 4).

Every stateful object exposes ``save() -> State`` where ``State`` is a frozen
dataclass of plain values, and ``restore(args, state)``. This module turns
such a dataclass into bytes and back, guided only by the dataclass's type
hints, so a snapshot or migration stream never contains code (unlike pickle)
and a malformed stream gives ``StateError`` rather than arbitrary objects.

Supported field types: int, float, bool, str, bytes, Path, None, enums, nested
dataclasses, ``X | None``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``list[X]``,
``dict[K, V]`` (K int or str).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from kvmlite.errors import StateError

T = TypeVar("T")


def to_plain(obj: Any) -> Any:
    """Turn a state value into JSON-compatible data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return to_plain(obj.value)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"b64": base64.b64encode(bytes(obj)).decode()}
    if isinstance(obj, tuple | list):
        return [to_plain(x) for x in obj]
    if isinstance(obj, dict):
        return [[to_plain(k), to_plain(v)] for k, v in obj.items()]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise StateError(f"cannot serialise {type(obj).__name__} in device state")


@functools.cache
def _hints(tp: type) -> dict[str, Any]:
    """A dataclass's resolved type hints (resolving them costs ~1 ms a class)."""
    return typing.get_type_hints(tp)


def from_plain(tp: Any, data: Any, where: str = "state") -> Any:
    """Rebuild a value of type ``tp`` from ``to_plain`` output, checking types."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return from_plain(a, data, where)
            except StateError as e:
                errors.append(str(e))
        raise StateError(f"{where}: no matching type: {'; '.join(errors)}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise StateError(f"{where}: expected an object for {tp.__name__}")
        hints = _hints(tp)
        unknown = set(data) - {f.name for f in dataclasses.fields(tp)}
        if unknown:
            raise StateError(f"{where}: unknown field {tp.__name__}.{sorted(map(str, unknown))[0]}")
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name not in data:
                raise StateError(f"{where}: missing field {tp.__name__}.{f.name}")
            kwargs[f.name] = from_plain(hints[f.name], data[f.name], f"{where}.{f.name}")
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError as e:
            raise StateError(f"{where}: {e}") from None
    if tp is bytes:
        if not (isinstance(data, dict) and isinstance(data.get("b64"), str)):
            raise StateError(f"{where}: expected bytes")
        try:
            return base64.b64decode(data["b64"], validate=True)
        except ValueError as e:
            raise StateError(f"{where}: bad base64: {e}") from None
    if origin in (tuple, list):
        if not isinstance(data, list):
            raise StateError(f"{where}: expected a sequence")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(data):
                raise StateError(f"{where}: expected {len(args)} items, got {len(data)}")
            return tuple(
                from_plain(a, d, f"{where}[{i}]")
                for i, (a, d) in enumerate(zip(args, data, strict=True))
            )
        item = args[0] if args else Any
        items = [from_plain(item, d, f"{where}[{i}]") for i, d in enumerate(data)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(data, list):
            raise StateError(f"{where}: expected a mapping")
        out = {}
        for pair in data:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise StateError(f"{where}: bad mapping entry")
            out[from_plain(args[0], pair[0], where)] = from_plain(args[1], pair[1], where)
        return out
    if tp is Path and isinstance(data, str):
        return Path(data)
    if tp is float and isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    if tp in (int, str, bool) and type(data) is tp:
        return data
    if tp is type(None) and data is None:
        return None
    raise StateError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {type(data).__name__}")


def dumps(state: Any) -> bytes:
    """Serialise a state dataclass to bytes."""
    return json.dumps(to_plain(state), separators=(",", ":")).encode()


def loads(cls: type[T], data: bytes) -> T:
    """Rebuild a state dataclass of type ``cls`` from ``dumps`` output."""
    try:
        plain = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise StateError(f"corrupt {cls.__name__} state: {e}") from None
    return from_plain(cls, plain, cls.__name__)

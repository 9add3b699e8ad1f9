import dataclasses
import enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite import state
from kvmlite.errors import StateError


class Mode(enum.Enum):
    A = 1
    B = 2


@dataclasses.dataclass(frozen=True)
class Inner:
    x: int
    data: bytes


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str
    mode: Mode
    inner: Inner
    items: tuple[int, ...]
    pair: tuple[int, str]
    maybe: Inner | None
    table: dict[int, bytes]
    ratio: float


def test_round_trip():
    s = Outer("x", Mode.B, Inner(3, b"\x00\xff"), (1, 2, 3), (4, "y"), None, {5: b"z"}, 0.5)
    assert state.loads(Outer, state.dumps(s)) == s


@given(st.binary(), st.lists(st.integers()), st.one_of(st.none(), st.integers()))
def test_round_trip_fuzz(b, ints, maybe):
    s = Outer(
        "n",
        Mode.A,
        Inner(len(b), b),
        tuple(ints),
        (0, ""),
        None if maybe is None else Inner(maybe, b),
        {i: b for i in ints},
        1.0,
    )
    assert state.loads(Outer, state.dumps(s)) == s


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"{",
        b"[]",
        b'{"x": 1}',
        b'{"x": "1", "data": {"b64": ""}}',
        b'{"x": 1, "data": {"b64": "!!"}}',
        b"\xff\xfe",
    ],
)
def test_malformed_is_state_error(blob):
    with pytest.raises(StateError):
        state.loads(Inner, blob)


@given(st.binary(max_size=64))
def test_garbage_never_escapes_as_other_exception(blob):
    try:
        state.loads(Outer, blob)
    except StateError:
        pass

from hypothesis import given
from hypothesis import strategies as st

from kvmlite.backends.char.escape import EscapeAction, EscapeParser


def test_keys():
    p = EscapeParser()
    assert p.feed(b"ab\x01xcd") == (b"abcd", [EscapeAction.QUIT])
    assert p.feed(b"\x01h\x01c") == (b"", [EscapeAction.HELP, EscapeAction.MONITOR])
    assert p.feed(b"\x01\x01") == (b"\x01", [])
    assert p.feed(b"\x01q z") == (b" z", [])  # unknown key: both dropped


def test_escape_split_across_reads():
    p = EscapeParser()
    assert p.feed(b"a\x01") == (b"a", [])
    assert p.feed(b"x") == (b"", [EscapeAction.QUIT])
    assert p.feed(b"\x01") == (b"", [])
    assert p.feed(b"\x01b") == (b"\x01b", [])


@given(st.binary())
def test_plain_bytes_pass_through(data):
    data = data.replace(b"\x01", b"")
    assert EscapeParser().feed(data) == (data, [])


@given(st.binary())
def test_doubled_escapes_round_trip(data):
    p = EscapeParser()
    out, actions = p.feed(data.replace(b"\x01", b"\x01\x01"))
    assert out == data and actions == []


@given(st.lists(st.binary(max_size=8)))
def test_chunking_does_not_matter(chunks):
    whole = EscapeParser().feed(b"".join(chunks))
    p = EscapeParser()
    out, acts = b"", []
    for c in chunks:
        o, a = p.feed(c)
        out += o
        acts += a
    assert (out, acts) == whole


def test_break_key():
    assert EscapeParser().feed(b"\x01bt") == (b"t", [EscapeAction.BREAK])

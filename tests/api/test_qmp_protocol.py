"""kvmlite/api/qmp.py: the stream parser and one session's protocol, without sockets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.api.qmp import (
    COMMAND_NOT_FOUND,
    GENERIC_ERROR,
    JsonParseError,
    QmpError,
    QmpParser,
    QmpProtocolError,
    QmpSession,
    event_message,
    greeting,
)


def feed_all(parser: QmpParser, chunks: list[bytes]) -> list[object]:
    out: list[object] = []
    for c in chunks:
        out += parser.feed(c)
    return out


def test_values_without_newline_and_split_anywhere():
    stream = b'{"execute": "a", "id": "x\\u00e9"}{"execute":"b"}  \n{"execute": "c"}'
    for cut in range(len(stream) + 1):
        got = feed_all(QmpParser(), [stream[:cut], stream[cut:]])
        assert got == [{"execute": "a", "id": "x\u00e9"}, {"execute": "b"}, {"execute": "c"}]


def test_split_inside_literals_and_utf8():
    stream = '{"a": true, "b": false, "c": null, "d": "\u20ac"}'.encode()
    got = feed_all(QmpParser(), [bytes([b]) for b in stream])
    assert got == [{"a": True, "b": False, "c": None, "d": "\u20ac"}]


def test_malformed_json_is_reported_and_skipped_to_next_line():
    p = QmpParser()
    got = p.feed(b'{"execute": }\n{"execute": "ok"}')
    assert isinstance(got[0], JsonParseError)
    assert got[1:] == [{"execute": "ok"}]


def test_garbage_without_newline_is_dropped():
    p = QmpParser()
    got = p.feed(b"hello world")
    assert len(got) == 1 and isinstance(got[0], JsonParseError)
    assert p.feed(b'{"execute": "x"}') == [{"execute": "x"}]


def test_invalid_utf8_ends_the_session():
    with pytest.raises(QmpProtocolError, match="UTF-8"):
        QmpParser().feed(b'{"a": "\xff\xfe"}')


def test_oversized_message_ends_the_session():
    p = QmpParser(max_message=1000)
    p.feed(b'{"execute": "' + b"x" * 900)
    with pytest.raises(QmpProtocolError, match="exceeds 1000"):
        p.feed(b"y" * 200)


def test_oversized_complete_message_ends_the_session():
    with pytest.raises(QmpProtocolError):
        QmpParser(max_message=100).feed(json.dumps({"a": "x" * 200}).encode())


def test_deep_nesting_is_a_parse_error_not_a_crash():
    got = QmpParser().feed(b"[" * 100000 + b"]" * 100000 + b"\n")
    assert len(got) == 1 and isinstance(got[0], JsonParseError)


@given(st.binary(max_size=300))
def test_fuzz_parser_never_raises_anything_else(data):
    p = QmpParser(max_message=200)
    try:
        p.feed(data)
    except QmpProtocolError:
        pass


@given(st.lists(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5))))
def test_fuzz_round_trip(objs):
    data = b"".join(json.dumps(o).encode() for o in objs)
    assert QmpParser().feed(data) == objs


# -- the session ---------------------------------------------------------------


def session() -> QmpSession:
    def boom(args):
        raise QmpError(GENERIC_ERROR, "it failed")

    def bug(args):
        raise ZeroDivisionError("oops")

    return QmpSession({"echo": lambda args: args, "boom": boom, "bug": bug})


def send(s: QmpSession, msg: object) -> dict:
    (reply,) = s.receive(json.dumps(msg).encode())
    return reply


def test_greeting_shape():
    g = greeting()["QMP"]
    assert set(g["version"]["qemu"]) == {"major", "minor", "micro"}
    assert g["capabilities"] == []


def test_commands_before_negotiation_are_refused():
    s = session()
    r = send(s, {"execute": "echo", "id": 7})
    assert r == {
        "error": {
            "class": COMMAND_NOT_FOUND,
            "desc": "Expecting capabilities negotiation with 'qmp_capabilities'",
        },
        "id": 7,
    }
    assert send(s, {"execute": "qmp_capabilities", "id": "n"}) == {"return": {}, "id": "n"}
    assert send(s, {"execute": "echo", "arguments": {"a": 1}}) == {"return": {"a": 1}}
    again = send(s, {"execute": "qmp_capabilities"})
    assert again["error"]["class"] == COMMAND_NOT_FOUND


def test_unknown_capability_is_refused_and_negotiation_stays_open():
    s = session()
    r = send(s, {"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}})
    assert r["error"] == {"class": GENERIC_ERROR, "desc": "Capability 'oob' not available"}
    assert not s.negotiated


@pytest.mark.parametrize(
    ("msg", "desc"),
    [
        ([1, 2], "QMP input must be a JSON object"),
        ({"id": 1}, "QMP input lacks member 'execute'"),
        ({"execute": 5}, "QMP input member 'execute' must be a string"),
        ({"execute": "echo", "arguments": []}, "QMP input member 'arguments' must be an object"),
        ({"execute": "echo", "bogus": 1}, "QMP input member 'bogus' is unexpected"),
    ],
)
def test_malformed_requests(msg, desc):
    s = session()
    send(s, {"execute": "qmp_capabilities"})
    r = send(s, msg)
    assert r["error"] == {"class": GENERIC_ERROR, "desc": desc}


def test_unknown_command_and_handler_errors_echo_the_id():
    s = session()
    send(s, {"execute": "qmp_capabilities"})
    r = send(s, {"execute": "nope", "id": {"x": [1]}})
    assert r["error"]["class"] == COMMAND_NOT_FOUND and r["id"] == {"x": [1]}
    assert send(s, {"execute": "boom", "id": 1})["error"] == {
        "class": GENERIC_ERROR,
        "desc": "it failed",
    }
    r = send(s, {"execute": "bug", "id": 2})
    assert r["error"]["class"] == GENERIC_ERROR and r["id"] == 2
    assert send(s, {"execute": "echo", "id": None}) == {"return": {}, "id": None}


def test_parse_error_reply_then_session_goes_on():
    s = session()
    replies = s.receive(b'{"execute": ]\n{"execute": "qmp_capabilities"}')
    assert replies[0]["error"]["class"] == GENERIC_ERROR
    assert replies[0]["error"]["desc"].startswith("JSON parse error")
    assert replies[1] == {"return": {}}


def test_event_message():
    m = event_message("STOP", {}, 1700000000.25)
    assert m == {"event": "STOP", "timestamp": {"seconds": 1700000000, "microseconds": 250000}}
    assert event_message("SHUTDOWN", {"guest": True}, 1.0)["data"] == {"guest": True}

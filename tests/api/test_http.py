"""The sans-IO HTTP/1.1 request parser (kvmlite/api/http.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.api.http import Event, HttpError, Request, RequestParser, response


def parse_all(data: bytes, max_body: int = 100) -> list[Request | Event]:
    parser = RequestParser(max_body)
    parser.feed(data)
    events: list[Request | Event] = []
    while (event := parser.next_event()) is not Event.NEED_DATA:
        events.append(event)
    return events


def test_request_with_body_and_pipelining() -> None:
    data = (
        b"PUT /drives/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}"
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    first, second = parse_all(data)
    assert isinstance(first, Request) and isinstance(second, Request)
    assert (first.method, first.path, first.body, first.keep_alive) == (
        "PUT",
        "/drives/a",
        b"{}",
        True,
    )
    assert (second.method, second.keep_alive) == ("GET", False)


def test_byte_by_byte_and_expect_continue() -> None:
    data = b"PATCH /vm HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"
    parser = RequestParser()
    events = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        while (event := parser.next_event()) is not Event.NEED_DATA:
            events.append(event)
    assert events[0] is Event.CONTINUE
    assert isinstance(events[1], Request) and events[1].body == b"abc"
    assert parser.idle


def test_http10_closes_by_default() -> None:
    (req,) = parse_all(b"GET / HTTP/1.0\r\n\r\n")
    assert isinstance(req, Request) and not req.keep_alive


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET /\r\n\r\n", "malformed request line"),
        (b"BREW / HTTP/1.1\r\n\r\n", "unsupported HTTP method"),
        (b"GET / HTTP/2\r\n\r\n", "unsupported HTTP version"),
        (b"GET http://x/ HTTP/1.1\r\n\r\n", "must be a path"),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", "malformed header"),
        (b"PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"PUT / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", "larger than the limit of 100"),
        (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "chunked"),
        (b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting"),
        (b"GET /\xff HTTP/1.1\r\n\r\n", "not ASCII"),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000, "longer than"),
    ],
)
def test_malformed_requests_are_400(data: bytes, message: str) -> None:
    with pytest.raises(HttpError, match=message) as info:
        parse_all(data)
    assert info.value.status == 400


def test_responses() -> None:
    assert response(204) == (
        b"HTTP/1.1 204 No Content\r\nServer: kvmlite\r\nContent-Type: application/json\r\n"
        b"Connection: keep-alive\r\n\r\n"
    )
    out = response(400, {"fault_message": "x"}, keep_alive=False)
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == b'{"fault_message": "x"}'
    assert b"Content-Length: 22" in head and b"Connection: close" in head


@given(st.binary(max_size=300), st.integers(1, 50))
def test_fuzz_never_crashes(data: bytes, chunk: int) -> None:
    parser = RequestParser(64)
    try:
        for i in range(0, len(data), chunk):
            parser.feed(data[i : i + chunk])
            while (event := parser.next_event()) is not Event.NEED_DATA:
                assert isinstance(event, Request | Event)
                if isinstance(event, Request):
                    assert len(event.body) <= 64
    except HttpError as e:
        assert e.status == 400

"""Hypothesis fuzz of the RFB core: any byte stream, cut anywhere, never raises.

Whatever a viewer sends, the core either keeps going or returns ``Closed``
(after which it ignores input); ``send_update`` never fails, and a decoded
update always matches the framebuffer.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvmlite.vnc import rfb
from kvmlite.vnc.auth import AuthThrottle
from kvmlite.vnc.encodings import Surface
from kvmlite.vnc.pixels import PixelFormat, PixelFormatError

from . import fakeclient as fc

W, H = 70, 40
BUF = bytearray((i * 7) & 0xFF for i in range(W * H * 4))
HANDSHAKE = b"RFB 003.008\n\x01\x01"

pixel_formats = st.builds(
    PixelFormat,
    st.sampled_from([8, 16, 24, 32, 0, 255]),
    st.integers(0, 40),
    st.booleans(),
    st.booleans(),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 40),
    st.integers(0, 40),
    st.integers(0, 40),
)
u16 = st.integers(0, 0xFFFF)
messages = st.one_of(
    pixel_formats.map(fc.set_pixel_format),
    st.lists(st.integers(-(2**31), 2**31 - 1), max_size=20).map(lambda e: fc.set_encodings(*e)),
    st.builds(fc.update_request, st.booleans(), u16, u16, u16, u16),
    st.builds(fc.key_event, st.booleans(), st.integers(0, 2**32 - 1)),
    st.builds(fc.pointer_event, st.integers(0, 255), u16, u16),
    st.binary(max_size=64).map(fc.cut_text),
    st.builds(
        fc.qemu_key_event, st.booleans(), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)
    ),
    st.binary(max_size=24),  # garbage
)


def _run(stream: bytes, cuts: list[int], password: bytes | None = None) -> rfb.RfbConnection:
    throttle = AuthThrottle(lambda: 0.0) if password else None
    conn = rfb.RfbConnection(W, H, password=password, throttle=throttle)
    surface = Surface(memoryview(BUF), W, H, W * 4)
    pos = 0
    for cut in sorted(cuts) + [len(stream)]:
        events = conn.receive_data(stream[pos:cut])
        pos = max(pos, cut)
        assert all(isinstance(e, rfb.Event.__args__) for e in events)
        for e in events:
            if isinstance(e, rfb.PointerEvent):
                assert 0 <= e.x < W and 0 <= e.y < H
        conn.send_update(surface)
        conn.data_to_send()
        conn.poll()
    return conn


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=8))
def test_raw_bytes_anywhere(data: bytes, cuts: list[int]) -> None:
    _run(data, cuts)
    _run(HANDSHAKE + data, cuts)
    _run(b"RFB 003.008\n\x02" + data, cuts, password=b"pw")


@given(st.lists(messages, max_size=12), st.lists(st.integers(0, 400), max_size=6))
def test_message_sequences(msgs: list[bytes], cuts: list[int]) -> None:
    conn = _run(HANDSHAKE + b"".join(msgs), cuts)
    if conn.closed is None:
        # still open: every pixel format it accepted must be one we can produce
        try:
            conn.format.validate()
        except PixelFormatError as e:  # pragma: no cover - a real failure
            raise AssertionError(e) from e


@given(
    st.sampled_from(fc.ALL_FORMATS), st.sampled_from([0, 16]), st.lists(u16, min_size=4, max_size=4)
)
def test_updates_decode_to_the_framebuffer(
    fmt: PixelFormat, encoding: int, rect: list[int]
) -> None:
    conn = rfb.RfbConnection(W, H)
    conn.receive_data(HANDSHAKE + b"\x01" + fc.set_pixel_format(fmt) + fc.set_encodings(encoding))
    x, y, w, h = rect[0] % (W + 5), rect[1] % (H + 5), rect[2] % 90, rect[3] % 60
    conn.receive_data(fc.update_request(False, x, y, w, h))
    conn.data_to_send()
    conn.send_update(Surface(memoryview(BUF), W, H, W * 4))
    data = conn.data_to_send()
    if not data:
        return
    screen = fc.Screen(W, H, fmt)
    assert screen.feed_update(data) == len(data)
    for (px, py), value in screen.pixels.items():
        assert 0 <= px < W and 0 <= py < H
        o = (py * W + px) * 4
        assert value == fc.expected_rgb(fmt, BUF[o + 2], BUF[o + 1], BUF[o])

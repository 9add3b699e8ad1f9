"""Fuzzing the stream socket framing: any split of a valid stream, and garbage."""

from __future__ import annotations

import select
import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from kvmlite.backends.net.socket_stream import MAX_FRAME_LEN, StreamSocketBackend

FUZZ = settings(max_examples=100, deadline=None)


def feed(chunks: list[bytes]) -> tuple[list[bytes], StreamSocketBackend]:
    """Send ``chunks`` one by one into a backend; return what it parsed."""
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    backend = StreamSocketBackend(s1)
    got: list[bytes] = []
    try:
        for c in chunks:
            s2.sendall(c)
            if backend.connected and select.select([backend.fileno()], [], [], 1.0)[0]:
                got += backend.recv_frames()
        s2.close()
        while backend.connected and select.select([backend.fileno()], [], [], 1.0)[0]:
            got += backend.recv_frames()
    finally:
        s2.close()
        backend.close()
    return got, backend


@FUZZ
@given(
    frames=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 30000), max_size=10),
)
def test_any_split_of_a_valid_stream_gives_the_same_frames(
    frames: list[bytes], cuts: list[int]
) -> None:
    wire = b"".join(struct.pack(">I", len(f)) + f for f in frames)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    chunks = [wire[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]
    got, backend = feed(chunks)
    assert got == frames
    assert backend.rx_frames == len(frames)


@FUZZ
@given(garbage=st.binary(min_size=1, max_size=400))
def test_garbage_never_raises_and_only_yields_well_framed_prefixes(garbage: bytes) -> None:
    got, _ = feed([garbage])
    # Whatever came out is exactly the frames a correct reader finds first.
    expected = []
    pos = 0
    while len(garbage) - pos >= 4:
        (n,) = struct.unpack_from(">I", garbage, pos)
        if not 0 < n <= MAX_FRAME_LEN or len(garbage) - pos - 4 < n:
            break
        expected.append(garbage[pos + 4 : pos + 4 + n])
        pos += 4 + n
    assert got == expected

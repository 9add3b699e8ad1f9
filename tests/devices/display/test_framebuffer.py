"""LinearFramebuffer: geometry, dirty pages -> tiles, save/restore."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.devices.display import LinearFramebuffer
from kvmlite.errors import ConfigError, StateError


def _bitmap(pages: list[int], npages: int) -> bytes:
    bm = bytearray(-(-npages // 8))
    for p in pages:
        bm[p // 8] |= 1 << (p % 8)
    return bytes(bm)


def test_geometry_and_size_in_64k_units() -> None:
    fb = LinearFramebuffer(800, 600)
    assert fb.stride == 3200 and fb.size == 1920000 + (-1920000 % 65536)
    assert fb.size % 65536 == 0 and len(fb.buf) == fb.size
    fb.close()


@pytest.mark.parametrize("w,h", [(0, 10), (10, 0), (5000, 10), (4096, 4096)])
def test_bad_geometry(w: int, h: int) -> None:
    with pytest.raises(ConfigError):
        LinearFramebuffer(w, h)


def test_no_dirty_source_means_everything_changed() -> None:
    fb = LinearFramebuffer(130, 70)
    assert fb.changed_tiles(64) == bytearray(b"\x01" * 6)
    fb.close()


def test_page_inside_one_row_marks_only_its_columns() -> None:
    fb = LinearFramebuffer(2048, 100)  # stride 8192: two pages per row
    calls = [_bitmap([1], 50), _bitmap([], 50)]
    fb.dirty_pages = calls.pop
    assert fb.changed_tiles(64) == bytearray(32 * 2)  # an empty log: nothing
    # page 1 = row 0, x 1024..2047 -> tile columns 16..31 of tile row 0
    t = fb.changed_tiles(64)
    assert [i for i, v in enumerate(t) if v] == list(range(16, 32))
    fb.close()


def test_page_across_rows_marks_those_rows_whole() -> None:
    fb = LinearFramebuffer(800, 600)  # stride 3200: page 20 covers rows 25..26
    t = fb.tiles_from_pages(_bitmap([20], 500), 64)
    assert [i for i, v in enumerate(t) if v] == list(range(13))  # tile row 0, all 13
    last = fb.size // 4096 - 1  # beyond the visible pixels: ignored
    assert not any(fb.tiles_from_pages(_bitmap([last], last + 1), 64))
    fb.close()


@given(st.integers(1, 300), st.integers(1, 200), st.lists(st.integers(0, 100), max_size=10))
def test_dirty_tiles_cover_every_written_pixel(w: int, h: int, pages: list[int]) -> None:
    fb = LinearFramebuffer(w, h)
    tiles = fb.tiles_from_pages(_bitmap(pages, 101), 16)
    tw, _ = fb.tiles_shape(16)
    for p in pages:
        for off in range(p * 4096, min((p + 1) * 4096, fb.stride * h), 4):
            y, x = divmod(off // 4, w)
            assert tiles[(y // 16) * tw + x // 16], (p, x, y)
    fb.close()


def test_save_restore_round_trip() -> None:
    fb = LinearFramebuffer(64, 32)
    fb.buf[0:8] = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    state = fb.save()
    fb.close()
    fb2 = LinearFramebuffer.restore(None, state)
    assert bytes(fb2.buf[0:8]) == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    assert fb2.save() == state
    fb2.close()
    with pytest.raises(StateError):
        LinearFramebuffer.restore(None, LinearFramebuffer.State(64, 32, fb.gpa, b"xx"))


def test_state_serialises() -> None:
    from kvmlite.state import dumps, loads

    fb = LinearFramebuffer(16, 8)
    fb.buf[4:8] = b"\x10\x20\x30\x00"
    state = fb.save()
    fb.close()
    assert loads(LinearFramebuffer.State, dumps(state)) == state

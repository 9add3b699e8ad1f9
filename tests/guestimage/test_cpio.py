"""newc cpio writer, judged by GNU cpio and busybox cpio (independent readers)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmlite.guestimage.cpio import NEWC_HEADER_SIZE, CpioError, NewcWriter


def _archive(build) -> bytes:
    buf = io.BytesIO()
    with NewcWriter(buf) as w:
        build(w)
    return buf.getvalue()


def _sample(w: NewcWriter) -> None:
    w.directory("dev")
    w.char_device("dev/console", 5, 1, 0o600)
    w.block_device("dev/vda", 254, 0, 0o660)
    w.directory("bin", 0o750)
    w.file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
    w.file("empty", b"")
    w.file("odd", b"x" * 5)  # data that needs padding
    w.symlink("bin/sh", "/bin/busybox")
    w.fifo("pipe", 0o640)


def _cpio(args: list[str], data: bytes, cwd: Path | None = None) -> str:
    proc = subprocess.run(["cpio", *args], input=data, capture_output=True, cwd=cwd, check=True)
    return proc.stdout.decode()


def test_gnu_cpio_lists_every_member_with_type_mode_and_device() -> None:
    out = _cpio(["-itv", "--quiet"], _archive(_sample)).splitlines()
    rows = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in out}
    assert set(rows) == {
        "dev", "dev/console", "dev/vda", "bin", "bin/hello", "empty", "odd", "bin/sh", "pipe"
    }  # fmt: skip
    assert rows["dev"].startswith("drwxr-xr-x")
    assert rows["bin"].startswith("drwxr-x---")
    assert rows["dev/console"].startswith("crw-------") and "5,   1" in rows["dev/console"]
    assert rows["dev/vda"].startswith("brw-rw----") and "254,   0" in rows["dev/vda"]
    assert rows["bin/hello"].startswith("-rwxr-xr-x")
    assert rows["pipe"].startswith("prw-r-----")
    assert rows["bin/sh"].startswith("lrwxrwxrwx") and rows["bin/sh"].endswith("-> /bin/busybox")


def test_busybox_cpio_agrees() -> None:
    proc = subprocess.run(
        ["busybox", "cpio", "-t"], input=_archive(_sample), capture_output=True, check=True
    )
    names = proc.stdout.decode().split()
    assert names == ["dev", "dev/console", "dev/vda", "bin", "bin/hello", "empty", "odd",
                     "bin/sh", "pipe"]  # fmt: skip


def test_extracted_contents_match(tmp_path: Path) -> None:
    def build(w: NewcWriter) -> None:
        w.directory("d")
        w.file("d/a", bytes(range(256)) * 3, 0o640)
        w.file("d/b", b"abc")
        w.symlink("d/link", "a")

    _cpio(["-idm", "--quiet", "--no-absolute-filenames"], _archive(build), cwd=tmp_path)
    assert (tmp_path / "d/a").read_bytes() == bytes(range(256)) * 3
    assert stat.S_IMODE((tmp_path / "d/a").stat().st_mode) == 0o640
    assert (tmp_path / "d/b").read_bytes() == b"abc"
    assert os.readlink(tmp_path / "d/link") == "a"


def test_layout_is_4_byte_aligned_and_ends_with_trailer() -> None:
    data = _archive(lambda w: w.file("abc", b"12345"))
    # header 110 + "abc\0" = 114 -> padded to 116; data 5 -> padded to 8.
    first = data[:NEWC_HEADER_SIZE]
    assert first[:6] == b"070701"
    assert int(first[6 + 6 * 8 : 6 + 7 * 8], 16) == 5  # c_filesize
    assert int(first[6 + 11 * 8 : 6 + 12 * 8], 16) == 4  # c_namesize counts the NUL
    assert data[110:114] == b"abc\0" and data[114:116] == b"\0\0"
    assert data[116:121] == b"12345" and data[121:124] == b"\0\0\0"
    assert data[124:130] == b"070701" and b"TRAILER!!!\0" in data[124:]
    assert len(data) % 4 == 0


def test_output_is_deterministic() -> None:
    assert _archive(_sample) == _archive(_sample)


@pytest.mark.parametrize(
    "name",
    ["", "/abs", "a//b", "./a", "a/./b", "../x", "a/..", "a\0b", "TRAILER!!!", "x" * 4096,
     "bad\udcffutf8"],
)  # fmt: skip
def test_bad_names_are_refused(name: str) -> None:
    w = NewcWriter(io.BytesIO())
    with pytest.raises(CpioError):
        w.file(name, b"")


def test_parent_directory_must_come_first() -> None:
    w = NewcWriter(io.BytesIO())
    with pytest.raises(CpioError, match="parent directory 'd'"):
        w.file("d/x", b"")
    w.file("f", b"")
    with pytest.raises(CpioError, match="parent directory 'f'"):
        w.file("f/x", b"")  # a file is no parent


def test_duplicates_and_closed_archive_are_refused() -> None:
    w = NewcWriter(io.BytesIO())
    w.directory("d")
    with pytest.raises(CpioError, match="already"):
        w.file("d", b"")
    w.close()
    w.close()  # idempotent
    with pytest.raises(CpioError, match="closed"):
        w.file("x", b"")


@pytest.mark.parametrize(
    ("major", "minor"), [(-1, 0), (4096, 0), (0, 1 << 20), (True, 1), (1.5, 0)]
)
def test_device_numbers_must_fit_the_kernels_dev_t(major: object, minor: object) -> None:
    w = NewcWriter(io.BytesIO())
    with pytest.raises(CpioError):
        w.char_device("c", major, minor)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", [-1, 0o10000, 0o100644])
def test_mode_is_permission_bits_only(mode: int) -> None:
    with pytest.raises(CpioError, match="mode"):
        NewcWriter(io.BytesIO()).file("f", b"", mode)


@pytest.mark.parametrize("target", ["", "a\0b", "x" * 4096])
def test_bad_symlink_targets_are_refused(target: str) -> None:
    with pytest.raises(CpioError):
        NewcWriter(io.BytesIO()).symlink("l", target)


def test_non_bytes_data_is_refused() -> None:
    with pytest.raises(CpioError, match="bytes"):
        NewcWriter(io.BytesIO()).file("f", "text")  # type: ignore[arg-type]


# -- fuzzing: arbitrary names are either refused cleanly or read back exactly --

_component = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))


@settings(max_examples=40, deadline=None)
@given(
    files=st.dictionaries(_component, st.binary(max_size=70), min_size=1, max_size=6),
    subdir=_component,
)
def test_fuzz_round_trip_through_gnu_cpio(files: dict[str, bytes], subdir: str) -> None:
    def build(w: NewcWriter) -> None:
        w.directory(subdir)
        for name, data in files.items():
            w.file(f"{subdir}/{name}", data)

    with tempfile.TemporaryDirectory() as tmp:
        _cpio(["-idm", "--quiet", "--no-absolute-filenames"], _archive(build), cwd=Path(tmp))
        extracted = {p.name: p.read_bytes() for p in (Path(tmp) / subdir).iterdir()}
    assert extracted == files


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=20), mode=st.integers(-10, 0o20000))
def test_fuzz_writer_only_raises_cpio_error(name: str, mode: int) -> None:
    w = NewcWriter(io.BytesIO())
    try:
        w.file(name, b"data", mode)
    except CpioError:
        return
    assert 0 <= mode <= 0o7777 and name and not name.startswith("/")

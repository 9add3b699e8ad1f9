"""The kernel build's progress (kvmlite/guestimage/progress.py), without a real build."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.guestimage.kernel import _Builder
from kvmlite.guestimage.progress import (
    DEFAULT_EXPECTED_OBJECTS,
    BuildProgress,
    count_objects,
    expected_objects,
    is_object_line,
)


@pytest.mark.parametrize(
    ("line", "counted"),
    [
        (b"  CC      kernel/fork.o\n", True),
        (b"  AS      arch/x86/entry/entry_64.o\n", True),
        (b"  CC [M]  drivers/foo.o\n", True),
        (b"  HOSTCC  scripts/kconfig/conf.o\n", False),
        (b"  CC      kernel/bounds.s\n", False),
        (b"  LD      vmlinux.o\n", False),
        (b"  AR      kernel/built-in.a\n", False),
        (b"kernel/fork.c:12: warning: CC something.o\n", False),
        (b"", False),
    ],
)
def test_object_lines(line, counted):
    assert is_object_line(line) is counted


@given(st.binary(max_size=200))
def test_fuzz_object_line(data):
    assert is_object_line(data) in (True, False)


def test_plain_line_per_ten_percent_when_not_a_tty():
    out = io.StringIO()
    p = BuildProgress(200, stream=out, tty=False, label="build")
    for i in range(230):  # an estimate that was too low: never above 99 % before the end
        p.line(f"  CC      obj{i}.o\n".encode())
        p.line(b"  LD      something\n")
    assert p.percent == 99
    p.finish()
    lines = out.getvalue().splitlines()
    assert lines == [f"build: {d}% ({d * 2}/200 objects)" for d in range(10, 100, 10)] + [
        "build: 100% (230 objects compiled)"
    ]


def test_tqdm_bar_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    p = BuildProgress(50, stream=out, label="kbuild")
    for _ in range(25):
        p.advance()
    assert p._bar.n == 25 and p.percent == 50
    p.finish()
    text = out.getvalue()
    assert "kbuild" in text and "100%" in text and "50/50" in text
    assert "%: " not in text  # no plain lines


def test_expected_objects_file(tmp_path):
    f = tmp_path / "objects.count"
    assert expected_objects(f) == DEFAULT_EXPECTED_OBJECTS
    for bad in ("", "abc", "-5", "0"):
        f.write_text(bad)
        assert expected_objects(f) == DEFAULT_EXPECTED_OBJECTS
    f.write_text("777\n")
    assert expected_objects(f) == 777


def test_count_objects_skips_host_programs(tmp_path):
    for rel in ("kernel/fork.o", "mm/slab.o", "scripts/kconfig/conf.o", "tools/objtool/x.o"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "kernel/built-in.a").write_bytes(b"")
    assert count_objects(tmp_path) == 2


def test_builder_feeds_the_build_output_to_the_progress_and_the_log(tmp_path: Path):
    fake_make = tmp_path / "fake-make"
    fake_make.write_text(
        "import sys\n"
        "for i in range(20):\n"
        "    print(f'  CC      dir/f{i}.o', flush=True)\n"
        "print('  LD      vmlinux')\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    b = _Builder(tmp_path, progress=True)
    out = io.StringIO()
    p = BuildProgress(20, stream=out, tty=False, label="t")
    b.run("build", [sys.executable, str(fake_make), "0"], tmp_path, p)
    assert p.done == 20
    assert out.getvalue().splitlines()[-1] == "t: 100% (20 objects compiled)"
    assert "  CC      dir/f19.o" in b.log.read_text()
    failed = BuildProgress(20, stream=io.StringIO(), tty=False)
    with pytest.raises(Exception, match="kernel build failed"):
        b.run("build", [sys.executable, str(fake_make), "2"], tmp_path, failed)
    assert "100%" not in failed.stream.getvalue()

"""The tiny-guest build kit (kvmlite.testing.guests), judged by readelf, objdump and QEMU."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmlite.errors import ImageError
from kvmlite.testing.guests import FLAT_LOAD_ADDRESS, GUEST_DIR, build_guest, qemu_argv

GUESTS = ("hello", "pio_loop", "mmio", "halt", "crash", "spin")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    out = tmp_path_factory.mktemp("kit")
    return {
        (g, kind): build_guest(GUEST_DIR / f"{g}.c", out, kind=kind)  # type: ignore[arg-type]
        for g in GUESTS
        for kind in ("flat", "pvh")
    }


@pytest.mark.parametrize("guest", GUESTS)
def test_pvh_note_points_at_the_entry(built, guest: str) -> None:
    elf = built[(guest, "pvh")]
    header = subprocess.run(["readelf", "-hln", str(elf)], capture_output=True, text=True)
    text = header.stdout
    assert "ELF64" in text and "Advanced Micro Devices X86-64" in text
    assert re.search(r"Entry point address:\s+0x100000\b", text)
    assert re.search(r"^\s+NOTE\s", text, re.M), "no PT_NOTE segment"
    # Xen note, type 0x12 (XEN_ELFNOTE_PHYS32_ENTRY), 4-byte descriptor = 0x00100000.
    assert re.search(r"Xen\s+0x00000004\s+.*\(0x00000012\)", text)
    assert "description data: 00 00 10 00" in text


@pytest.mark.parametrize("guest", GUESTS)
def test_flat_binary_is_the_loaded_image(built, guest: str) -> None:
    flat = built[(guest, "flat")].read_bytes()
    elf = built[(guest, "pvh")]
    text = subprocess.run(
        ["objcopy", "-O", "binary", "--only-section=.text", str(elf), "/dev/stdout"],
        capture_output=True,
        check=True,
    ).stdout
    assert flat.startswith(text) and len(text) > 64
    assert flat[0] == 0xFA  # cli: the 32-bit entry is the first byte at FLAT_LOAD_ADDRESS
    assert FLAT_LOAD_ADDRESS == 0x100000


FORBIDDEN = re.compile(
    r"%[xyz]mm|%st\b|%mm\d|\bf(ld|st|wait|ninit|nclex|xsave|xrstor)|\bxsave|\bxrstor|"
    r"\bcmpxchg16b|\bemms\b|\bclac\b|\bstac\b|\brdrand|\bpopcnt"
)


@pytest.mark.parametrize("guest", GUESTS)
def test_integer_instructions_only(built, guest: str) -> None:
    dis = subprocess.run(
        ["objdump", "-d", str(built[(guest, "pvh")])], capture_output=True, text=True, check=True
    ).stdout
    bad = [line for line in dis.splitlines() if FORBIDDEN.search(line)]
    assert not bad, bad


def test_qemu_boots_the_pvh_guest(built) -> None:
    """QEMU's own PVH loader is the independent judge of the note and entry state."""
    elf = built[("hello", "pvh")]
    argv = qemu_argv(elf, accel="tcg", machine="pc", append="console=hello")
    proc = subprocess.run(argv, capture_output=True, timeout=60)
    # isa-debug-exit makes QEMU exit with (code << 1) | 1; the guest exits with 0.
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == b"hello\npvh console=hello\n"


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        build_guest(tmp_path / "nope.c", tmp_path, kind="flat")


def test_compile_error_is_reported(tmp_path: Path) -> None:
    src_dir = tmp_path / "src"
    shutil.copytree(GUEST_DIR, src_dir, ignore=shutil.ignore_patterns("linux", "*.py", "__*"))
    (src_dir / "broken.c").write_text("int main(void) { return undefined_name; }\n")
    with pytest.raises(ImageError, match="undefined_name"):
        build_guest(src_dir / "broken.c", tmp_path / "out", kind="pvh")


def test_bad_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        build_guest(GUEST_DIR / "hello.c", tmp_path, kind="iso")  # type: ignore[arg-type]

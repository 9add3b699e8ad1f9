"""Static guest programs (tests/guests/linux/*.c), compiled once and cached.

A program is compiled with the host's gcc as a static binary (glibc
static: Debian's libc6-dev has it), so it runs as /init with nothing else
in the initramfs. The cache key covers the source and the compiler's
version, under ``<cache>/programs/<name>-<key>``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from kvmlite.errors import ImageError
from kvmlite.guestimage.cache import content_key, default_cache_dir

# The repository's guest program sources (an editable install keeps them beside the package).
GUEST_SOURCES = Path(__file__).resolve().parents[2] / "tests" / "guests" / "linux"


def compile_static(source: Path, cache_dir: Path | None = None) -> Path:
    """Compile ``source`` (C) to a static binary; return its cached path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ImageError("gcc not found: apt-get install build-essential")
    try:
        code = source.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read guest program source {source}: {e.strerror}") from None
    version = subprocess.run([gcc, "--version"], capture_output=True, check=False).stdout
    out = (
        (cache_dir or default_cache_dir())
        / "programs"
        / (f"{source.stem}-{content_key([code, version])}")
    )
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    proc = subprocess.run(
        [gcc, "-static", "-O2", "-Wall", "-o", str(tmp), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ImageError(
            f"gcc -static failed on {source} (is libc6-dev installed?):\n{proc.stderr}"
        )
    tmp.replace(out)
    return out

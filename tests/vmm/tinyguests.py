"""Build the VMM tests' tiny guests and run them through ``kvmlite run``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from arch.x86.images import make_bzimage  # tests/arch/x86/images.py

from kvmlite.testing.guests import CFLAGS, GUEST_DIR, LDFLAGS, build_guest

HERE = Path(__file__).parent / "guests"


def _sh(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def pvh_guest(name: str, out: Path) -> Path:
    """A guest from tests/vmm/guests with the kit's PVH startup (tests/guests/start.S)."""
    return build_guest(HERE / f"{name}.c", out, kind="pvh", kit_dir=GUEST_DIR)


def bzimage_guest(out: Path, name: str = "bzhello") -> Path:
    """``name``.c (bzhello.c) behind bzentry.S, wrapped in a bzImage setup header."""
    objs = []
    for src in (HERE / "bzentry.S", GUEST_DIR / "lib.c", HERE / f"{name}.c"):
        obj = out / f"{name}.{src.stem}.o"
        _sh(["gcc", *CFLAGS, f"-I{GUEST_DIR}", "-c", str(src), "-o", str(obj)])
        objs.append(str(obj))
    elf = out / f"{name}.elf"
    _sh(["ld", *LDFLAGS, "-T", str(GUEST_DIR / "guest.ld"), "-o", str(elf), *objs])
    flat = out / f"{name}.bin"
    _sh(["objcopy", "-O", "binary", str(elf), str(flat)])
    image = out / f"{name}.bzImage"
    # Not relocatable: the image is linked to run at 1 MiB.
    image.write_bytes(make_bzimage(kernel=flat.read_bytes(), relocatable=0))
    return image


def kvmlite_run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``kvmlite run ARGS`` in a child process, console on its stdout."""
    cmd = [sys.executable, "-m", "kvmlite.cli", "run", "--console", "stdio", *map(str, args)]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )

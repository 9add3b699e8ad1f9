"""``python -m kvmlite.guestimage``: build the default guest and print its paths.

This is what ``make run`` / ``make test`` call to prepare their fixtures.
Prints shell-style ``NAME=value`` lines (quoted), one per artefact.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from kvmlite.errors import KvmliteError
from kvmlite.guestimage import check_guest, default_guest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kvmlite.guestimage",
        description="Build kvmlite's default guest kernel and initramfs (cached).",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.add_argument(
        "--check", action="store_true", help="also build the check_init test initramfs"
    )
    args = parser.parse_args(argv)
    try:
        guest = default_guest(progress=not args.quiet)
        rows = {
            "KERNEL_VERSION": guest.kernel_version,
            "VMLINUX": str(guest.vmlinux),
            "BZIMAGE": str(guest.bzimage),
            "INITRD": str(guest.initrd),
            "CMDLINE": guest.cmdline,
        }
        if args.check:
            rows["CHECK_INITRD"] = str(check_guest(progress=not args.quiet).initrd)
    except KvmliteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for key, value in rows.items():
        print(f"{key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

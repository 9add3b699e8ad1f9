"""``kvmlite img``: disk image tools (kvmlite/imgtool.py)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    from kvmlite import imgtool  # noqa: PLC0415

    imgtool.register(subparsers)


def main(args: argparse.Namespace) -> int:
    from kvmlite import imgtool  # noqa: PLC0415

    return imgtool.run(args)

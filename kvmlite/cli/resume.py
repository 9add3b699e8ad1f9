"""``kvmlite resume ID``: resume a paused VM (QMP cont)."""

from __future__ import annotations

import argparse
from typing import Any

from kvmlite.cli.vmctl import add_vm_argument, run_command


def register(sub: Any) -> None:
    p = sub.add_parser(
        "resume", help="resume a paused VM (QMP cont)", description="Resume a paused VM (QMP cont)."
    )
    add_vm_argument(p)


def main(args: argparse.Namespace) -> int:
    return run_command(args.vm, "cont")

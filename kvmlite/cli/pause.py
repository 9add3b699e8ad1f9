"""``kvmlite pause ID``: pause a running VM (its vCPUs stop; QMP stop)."""

from __future__ import annotations

import argparse
from typing import Any

from kvmlite.cli.vmctl import add_vm_argument, run_command


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pause",
        help="pause a running VM (its vCPUs stop; QMP stop)",
        description="Pause a running VM (its vCPUs stop; QMP stop).",
    )
    add_vm_argument(p)


def main(args: argparse.Namespace) -> int:
    return run_command(args.vm, "stop")

"""``kvmlite powerdown ID``: press the VM's ACPI power button: the guest shuts down."""

from __future__ import annotations

import argparse
from typing import Any

from kvmlite.cli.vmctl import add_vm_argument, run_command


def register(sub: Any) -> None:
    p = sub.add_parser(
        "powerdown",
        help="press the VM's ACPI power button: the guest shuts down",
        description="Press the VM's ACPI power button: the guest shuts down.",
    )
    add_vm_argument(p)


def main(args: argparse.Namespace) -> int:
    return run_command(args.vm, "system_powerdown")

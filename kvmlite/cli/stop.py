"""``kvmlite stop ID``: end a VM now (QMP quit; the guest is not asked, see powerdown)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from kvmlite.api.rundir import find
from kvmlite.cli.vmctl import add_vm_argument, run_command
from kvmlite.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "stop",
        help="end a VM now (QMP quit)",
        description="End a VM now, as QMP quit does; the guest is not asked "
        "(kvmlite powerdown asks it). Waits until the VM's process has ended.",
    )
    add_vm_argument(p)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")


def main(args: argparse.Namespace) -> int:
    entry = None if "/" in args.vm else find(args.vm)
    status = run_command(args.vm, "quit")
    if status or entry is None:
        return status
    deadline = time.monotonic() + args.timeout
    while entry.alive():
        if time.monotonic() > deadline:
            raise ConfigError(f"VM {args.vm!r} (pid {entry.pid}) did not end in {args.timeout} s")
        time.sleep(0.05)
    return 0

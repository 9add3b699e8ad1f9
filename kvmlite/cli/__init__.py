"""The ``kvmlite`` command line: one module per subcommand.

``kvmlite run`` (cli/run.py) boots a kernel; ``img`` (kvmlite/imgtool.py)
works on disk images; ``serve`` (kvmlite/serve/) serves a device over
vhost-user. A subcommand's module is imported only when it is used, so that
``kvmlite run`` starts fast.

``kvmlite run`` exit statuses: 0 the guest powered off (or the user quit
from the console), 1 kvmlite failed (bad input, KVM error), 2 usage error,
3 the guest rebooted, 4 the guest crashed; a test guest that writes a value
to the debug-exit port ends kvmlite with that value as its status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from kvmlite import __version__
from kvmlite.errors import KvmliteError

#: name -> (module, one-line help). Each module has ``register(subparsers)``
#: and ``main(args) -> int``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("kvmlite.cli.run", "boot a Linux kernel (bzImage or vmlinux)"),
    "img": ("kvmlite.cli.img", "create, inspect, check and convert disk images"),
    "serve": ("kvmlite.cli.serve", "serve a virtio device to another VMM over vhost-user"),
    "snapshot": ("kvmlite.cli.snapshot", "snapshot a running VM (restore: run --restore DIR)"),
    "ps": ("kvmlite.cli.ps", "list the running VMs (id, pid, state, sockets)"),
    "pause": ("kvmlite.cli.pause", "pause a running VM"),
    "resume": ("kvmlite.cli.resume", "resume a paused VM"),
    "stop": ("kvmlite.cli.stop", "end a VM now (QMP quit)"),
    "powerdown": ("kvmlite.cli.powerdown", "press a VM's ACPI power button"),
    "api": ("kvmlite.cli.api", "send one request to a VM's REST API socket"),
    "firecracker": (
        "kvmlite.cli.firecracker",
        "a drop-in for the firecracker binary (its command line and REST API)",
    ),
}


def make_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvmlite", description="A small VMM for Linux/KVM.")
    parser.add_argument("--version", action="version", version=f"kvmlite {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = argv[0] if argv else None
    for name, (module, help_text) in SUBCOMMANDS.items():
        if argv is None or name == wanted:
            importlib.import_module(module).register(sub)
        else:  # listed in --help; the module loads only when used (start-up time)
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = make_parser(argv)
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", 0) or 0
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
        format="kvmlite: %(message)s",
    )
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        status: int = module.main(args)
        return status
    except KvmliteError as e:
        print(f"kvmlite: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

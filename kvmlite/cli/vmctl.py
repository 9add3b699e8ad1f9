"""What ``kvmlite pause|resume|stop|powerdown`` share: find a VM, run one QMP command.

A VM is named by its id (its runtime directory, kvmlite/api/rundir.py,
names its QMP socket) or by the path of a QMP unix socket.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kvmlite.api.address import SocketAddress
from kvmlite.api.qmp import QmpError
from kvmlite.api.qmp_client import QmpClient
from kvmlite.api.rundir import find
from kvmlite.errors import ConfigError


def add_vm_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("vm", metavar="ID|SOCKET", help="the VM's id (kvmlite ps) or a QMP socket path")


def qmp_address(vm: str) -> SocketAddress:
    if os.sep in vm:
        return SocketAddress(path=Path(vm))
    sockets = find(vm).sockets
    if "qmp" not in sockets:
        raise ConfigError(f"VM {vm!r} has no QMP socket")
    return SocketAddress.parse(sockets["qmp"])


def run_command(vm: str, command: str, arguments: dict[str, Any] | None = None) -> int:
    """Run one QMP command on ``vm``; 0, or 1 with the error on stderr."""
    address = qmp_address(vm)
    try:
        with QmpClient(address) as client:
            client.execute(command, arguments)
    except QmpError as e:
        print(f"kvmlite: {vm}: {e.desc}", file=sys.stderr)
        return 1
    except (OSError, EOFError, ValueError) as e:
        print(f"kvmlite: {vm}: cannot talk to its monitor {address}: {e}", file=sys.stderr)
        return 1
    return 0

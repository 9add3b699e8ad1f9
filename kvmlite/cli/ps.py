"""``kvmlite ps``: the running VMs (like ``lkvm list``): id, pid, state, sockets.

Reads the runtime directories (kvmlite/api/rundir.py), removing the stale
ones (a VM killed with SIGKILL), and asks each VM's QMP monitor for its
state (``query-status``); when the monitor does not answer, the state
vm.json last recorded is shown.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from kvmlite.api.address import SocketAddress
from kvmlite.api.qmp_client import QmpClient
from kvmlite.api.rundir import VmEntry, entries


def register(sub: Any) -> None:
    p = sub.add_parser(
        "ps",
        help="list the running VMs (id, pid, state, sockets)",
        description="List the VMs started by kvmlite run on this host (for this user).",
    )
    p.add_argument("--json", action="store_true", help="one JSON array, for scripts")


def live_state(entry: VmEntry) -> str:
    qmp = entry.sockets.get("qmp")
    if qmp is None:
        return entry.state
    try:
        with QmpClient(SocketAddress.parse(qmp), timeout=2.0) as client:
            return str(client.execute("query-status")["status"])
    except Exception:  # no answer, or a strange one: show the recorded state
        return entry.state


def main(args: argparse.Namespace) -> int:
    rows = []
    for _, entry in entries():
        row = entry.to_json()
        row["state"] = live_state(entry)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    table: list[tuple[str, str, str, str]] = [("ID", "PID", "STATE", "SOCKETS")]
    for r in rows:
        sockets = " ".join(f"{k}={v}" for k, v in sorted(r["sockets"].items()))
        table.append((r["id"], str(r["pid"]), r["state"], sockets))
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    for line in table:
        print("  ".join(c.ljust(w) for c, w in zip(line[:3], widths, strict=True)), line[3])
    return 0

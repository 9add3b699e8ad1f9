"""``kvmlite api ID|SOCKET METHOD PATH [JSON]``: one request to a VM's REST API.

A minimal HTTP/1.1 client (http.client) over the unix socket of the VM's
Firecracker-style REST API: the ``api`` socket its runtime directory
records when given an id, or the socket path itself. The response body goes
to stdout; the exit status is 0 for a 2xx answer, else 1 (with the status
line on stderr).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from kvmlite.api.rundir import find
from kvmlite.errors import ConfigError

METHODS = ("GET", "PUT", "PATCH", "POST", "DELETE")


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix stream socket (the Host header says "localhost")."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def register(sub: Any) -> None:
    p = sub.add_parser(
        "api",
        help="send one request to a VM's REST API socket",
        description="Send METHOD PATH (with a JSON body) to the REST API of a VM "
        "(its id, see kvmlite ps) or of the unix socket SOCKET; print the answer.",
    )
    p.add_argument("vm", metavar="ID|SOCKET")
    p.add_argument("method", type=str.upper, choices=METHODS, metavar="METHOD")
    p.add_argument("path", metavar="PATH", help="e.g. /machine-config")
    p.add_argument("body", nargs="?", metavar="JSON", help="request body (JSON)")
    p.add_argument("--timeout", type=float, default=30.0)


def socket_path(vm: str) -> str:
    if os.sep in vm or Path(vm).is_socket():
        return vm
    sockets = find(vm).sockets
    if "api" not in sockets:
        raise ConfigError(f"VM {vm!r} has no REST API socket (start it with --api-sock)")
    return sockets["api"]


def main(args: argparse.Namespace) -> int:
    if not args.path.startswith("/"):
        raise ConfigError(f"PATH {args.path!r} must start with '/'")
    body = None
    if args.body is not None:
        try:
            json.loads(args.body)
        except ValueError as e:
            raise ConfigError(f"the request body is not JSON: {e}") from None
        body = args.body.encode()
    path = socket_path(args.vm)
    conn = UnixHTTPConnection(path, timeout=args.timeout)
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(args.method, args.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as e:
        print(f"kvmlite: cannot talk to {path}: {e}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if data:
        sys.stdout.write(data.decode(errors="replace"))
        if not data.endswith(b"\n"):
            sys.stdout.write("\n")
    if not 200 <= response.status < 300:
        print(f"kvmlite: {response.status} {response.reason}", file=sys.stderr)
        return 1
    return 0

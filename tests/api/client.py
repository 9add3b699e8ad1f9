"""A tiny HTTP client over a unix socket for the REST tests (http.client)."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def call(
    conn: UnixConnection, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    """One request on ``conn`` (kept alive); returns (status, decoded JSON or None)."""
    payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    conn.request(method, path, body=payload, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, json.loads(data) if data else None


def request(path: str | Path, method: str, target: str, body: Any = None) -> tuple[int, Any]:
    conn = UnixConnection(path)
    try:
        return call(conn, method, target, body)
    finally:
        conn.close()

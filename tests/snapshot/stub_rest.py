"""A stand-in for the Firecracker-compatible REST server (the REST helper's
kvmlite/api/), with only what ``kvmlite snapshot`` calls: ``GET /``,
``GET /vm/config``, ``PATCH /vm`` and ``PUT /snapshot/create``, each turned
into an action as the real handlers do."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from pathlib import Path
from typing import Any

from kvmlite.errors import KvmliteError
from kvmlite.snapshot.firecracker import create_action
from kvmlite.vmm.actions import Describe, Pause, Resume
from kvmlite.vmm.vmm import Vmm


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    vmm: Vmm
    requests_seen: list[tuple[str, str]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return "unix"

    def _answer(self, status: int, doc: Any = None) -> None:
        body = b"" if doc is None else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _route(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        vmm = self.server.vmm
        self.server.requests_seen.append((method, self.path))
        try:
            if (method, self.path) == ("GET", "/"):
                d = vmm.submit(Describe())
                self._answer(200, {"id": d.id, "state": d.state.value})
            elif (method, self.path) == ("GET", "/vm/config"):
                mib = vmm.config.machine.memory >> 20
                self._answer(200, {"machine-config": {"mem_size_mib": mib}})
            elif (method, self.path) == ("PATCH", "/vm"):
                vmm.submit(Pause() if body["state"] == "Paused" else Resume())
                self._answer(204)
            elif (method, self.path) == ("PUT", "/snapshot/create"):
                vmm.submit(create_action(body), timeout=None)
                self._answer(204)
            else:
                self._answer(400, {"fault_message": "not in the stub"})
        except KvmliteError as e:
            self._answer(400, {"fault_message": str(e)})

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._route("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._route("PATCH")


class StubRest:
    def __init__(self, vmm: Vmm, path: Path) -> None:
        self.server = _Server(str(path), _Handler)
        self.server.vmm = vmm
        self.server.requests_seen = []
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self.server.requests_seen

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

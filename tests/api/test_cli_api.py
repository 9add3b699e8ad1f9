"""``kvmlite api``: one HTTP request over a unix socket, judged by Python's http.server."""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from kvmlite.api.rundir import RunDir


class Handler(BaseHTTPRequestHandler):
    seen: list = []

    def address_string(self):
        return "unix"

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, self.headers.get("Content-Type"), body))
        if self.path == "/fail":
            out, status = b'{"fault_message": "bad"}', 400
        elif self.command == "GET":
            out, status = b'{"state": "Running"}', 200
        else:
            out, status = b"", 204
        self.send_response(status)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_PUT = do_PATCH = _answer


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def http_sock(short_tmp):
    path = short_tmp / "api.sock"
    Handler.seen = []
    srv = Server(str(path), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield path
    srv.shutdown()
    srv.server_close()


def kvmlite(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kvmlite.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_put_with_body_then_get(http_sock):
    r = kvmlite("api", http_sock, "put", "/machine-config", '{"vcpu_count": 2}')
    assert r.returncode == 0, r.stderr
    r = kvmlite("api", http_sock, "GET", "/")
    assert r.returncode == 0 and json.loads(r.stdout) == {"state": "Running"}
    assert Handler.seen == [
        ("PUT", "/machine-config", "application/json", b'{"vcpu_count": 2}'),
        ("GET", "/", None, b""),
    ]


def test_error_status_is_exit_1_with_the_body(http_sock):
    r = kvmlite("api", http_sock, "PATCH", "/fail", "{}")
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"fault_message": "bad"}
    assert "400" in r.stderr


def test_bad_body_is_refused_before_sending(http_sock):
    r = kvmlite("api", http_sock, "PUT", "/x", "{not json")
    assert r.returncode == 1 and "not JSON" in r.stderr
    assert Handler.seen == []


def test_by_vm_id_through_its_runtime_directory(http_sock, short_tmp):
    base = short_tmp / "run"
    d = RunDir.create("vmx", base / "kvmlite")
    d.write(sockets={"api": str(http_sock)})
    r = kvmlite("api", "vmx", "GET", "/", env={"XDG_RUNTIME_DIR": str(base)})
    assert r.returncode == 0, r.stderr
    d.write(sockets={})
    r = kvmlite("api", "vmx", "GET", "/", env={"XDG_RUNTIME_DIR": str(base)})
    assert r.returncode == 1 and "no REST API socket" in r.stderr
    r = kvmlite("api", "nosuchvm", "GET", "/", env={"XDG_RUNTIME_DIR": str(base)})
    assert r.returncode == 1 and "no running VM" in r.stderr


def test_no_server(short_tmp):
    r = kvmlite("api", short_tmp / "none.sock", "GET", "/")
    assert r.returncode == 1 and "cannot talk" in r.stderr

"""The REST API on its unix socket: keep-alive, bad input, many clients."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from api.client import UnixConnection, call, request
from kvmlite.api.server import ApiServer
from kvmlite.errors import ConfigError
from kvmlite.vmm.vmm import Vmm


def raw(path: Path, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` and read until the server closes the connection (the server may
    answer and close before it has read everything: that is no error here)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        if data:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass  # the answer, if any, was read before the reset
        return out


def test_keep_alive_serves_many_requests_on_one_connection(api_sock: Path) -> None:
    conn = UnixConnection(api_sock)
    try:
        for _ in range(20):
            assert call(conn, "GET", "/")[0] == 200
        assert call(conn, "PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 64})[0] == 204
        assert call(conn, "GET", "/machine-config")[1]["vcpu_count"] == 2
    finally:
        conn.close()


def test_malformed_json_over_the_socket(api_sock: Path, vmm: Vmm) -> None:
    before = vmm.config
    conn = UnixConnection(api_sock)
    try:
        status, body = call(conn, "PUT", "/machine-config", raw=b'{"vcpu_count": 2,')
        assert status == 400 and "not valid JSON" in body["fault_message"]
        assert call(conn, "GET", "/")[0] == 200  # the connection is still good
    finally:
        conn.close()
    assert vmm.config == before


def test_malformed_http_is_answered_and_closed(api_sock: Path) -> None:
    out = raw(api_sock, b"GARBAGE\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400") and b"fault_message" in out


def test_huge_body_is_refused_before_it_is_read(api_sock: Path, vmm: Vmm) -> None:
    before = vmm.config
    head = b"PUT /machine-config HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n"
    out = raw(api_sock, head + b"x" * 60000)
    assert out.startswith(b"HTTP/1.1 400") and b"larger than the limit of 51200" in out
    assert vmm.config == before
    assert request(api_sock, "GET", "/")[0] == 200


def test_slow_client_is_cut_off(api_sock: Path) -> None:
    # The fixture's server allows 2 s for a whole request; this one never finishes.
    out = raw(api_sock, b"PUT /machine-config HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
    assert out.startswith(b"HTTP/1.1 400") and b"did not arrive within" in out


def test_client_that_disconnects_mid_request(api_sock: Path, vmm: Vmm) -> None:
    before = vmm.config
    for partial in (b"PUT /machine-config HTT", b"PUT /machine-config HTTP/1.1\r\nContent-"
                    b"Length: 40\r\n\r\n{\"vcpu_count\": 2"):  # fmt: skip
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(api_sock))
            s.sendall(partial)
    assert request(api_sock, "GET", "/")[0] == 200
    assert vmm.config == before


def test_hundred_concurrent_clients(api_sock: Path) -> None:
    results: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(100)

    def client(i: int) -> None:
        conn = UnixConnection(api_sock)
        try:
            conn.connect()
            barrier.wait(30)
            statuses = [call(conn, "GET", "/")[0]]
            body = {"vcpu_count": 1 + i % 2, "mem_size_mib": 64}
            statuses.append(call(conn, "PUT", "/machine-config", body)[0])
        finally:
            conn.close()
        with lock:
            results.extend(statuses)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [200] * 100 + [204] * 100


def test_socket_is_removed_and_stale_one_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, as after kill -9
    server = ApiServer(path, lambda m, p, b: (200, {}))
    server.start()
    with pytest.raises(ConfigError, match="in use"):
        ApiServer(path, lambda m, p, b: (200, {})).start()
    assert request(path, "GET", "/")[0] == 200
    server.close()
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket"):
        ApiServer(path, lambda m, p, b: (200, {})).start()


def test_connections_beyond_the_cap_are_refused(
    api_sock: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kvmlite.api.server as server_module

    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 2)
    held = [UnixConnection(api_sock) for _ in range(2)]
    try:
        for conn in held:
            assert call(conn, "GET", "/")[0] == 200  # both are being served
        # The refusal comes unasked, right after the connection is accepted.
        assert b"too many API connections" in raw(api_sock, b"")
    finally:
        for conn in held:
            conn.close()

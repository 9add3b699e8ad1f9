"""The QMP server against independent clients (qemu.qmp) and raw sockets, on a VMM
that is never started (no /dev/kvm needed): protocol, errors, several clients, events."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest
from qemu.qmp import EventListener, ExecuteError, QMPClient


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class Raw:
    """A plain socket client that reads CRLF-terminated messages."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(str(path))
        self.f = self.sock.makefile("rb")
        self.greeting = self.read()

    def read(self):
        line = self.f.readline()
        return json.loads(line) if line else None

    def send(self, data: bytes):
        self.sock.sendall(data)
        return self.read()

    def close(self):
        self.f.close()
        self.sock.close()


def test_qemu_qmp_client_negotiates_and_queries(server):
    async def go():
        qmp = QMPClient("judge")
        await qmp.connect(str(server.address.path))
        assert qmp.greeting.QMP.capabilities == []
        status = await qmp.execute("query-status")
        version = await qmp.execute("query-version")
        commands = {c["name"] for c in await qmp.execute("query-commands")}
        with pytest.raises(ExecuteError) as nf:
            await qmp.execute("no-such-command")
        with pytest.raises(ExecuteError) as refused:
            await qmp.execute("stop")
        block = await qmp.execute("query-block")
        await qmp.disconnect()
        return status, version, commands, nf.value, refused.value, block

    status, version, commands, nf, refused, block = run(go())
    assert status == {"running": False, "status": "prelaunch"}
    assert version["package"].startswith("kvmlite ")
    assert "qmp_capabilities" in commands
    assert {"query-status", "stop", "cont", "system_powerdown", "quit"} <= commands
    assert nf.error_class == "CommandNotFound"
    assert refused.error_class == "GenericError"
    assert "not been started" in str(refused)
    assert block == []


def test_events_reach_every_negotiated_client_with_timestamps(server, vmm):
    async def go():
        clients = [QMPClient(f"c{i}") for i in range(3)]
        listeners = []
        for c in clients:
            await c.connect(str(server.address.path))
            listeners.append(EventListener())
            c.register_listener(listeners[-1])
        vmm.loop.call_soon(lambda: vmm.emit("STOP"))
        vmm.loop.call_soon(lambda: vmm.emit("SHUTDOWN", {"guest": True, "reason": "x"}))
        got = []
        for lst in listeners:
            got.append([await lst.get(), await lst.get()])
        for c in clients:
            await c.disconnect()
        return got

    for stop, shutdown in run(go()):
        assert stop["event"] == "STOP" and "data" not in stop
        assert set(stop["timestamp"]) == {"seconds", "microseconds"}
        assert shutdown["data"] == {"guest": True, "reason": "x"}


def test_no_events_before_negotiation_and_id_echo(server, vmm):
    c = Raw(server.address.path)
    assert c.greeting["QMP"]["version"]["qemu"].keys() == {"major", "minor", "micro"}
    r = c.send(b'{"execute": "query-status", "id": "early"}')
    assert r["error"]["class"] == "CommandNotFound" and r["id"] == "early"
    emitted = threading.Event()

    def emit_stop() -> None:
        vmm.emit("STOP")  # not for this client yet
        emitted.set()

    vmm.loop.call_soon(emit_stop)
    assert emitted.wait(5)  # emitted before the client negotiates (no race with it)
    assert c.send(b'{"execute": "qmp_capabilities"}') == {"return": {}}
    r = c.send(b'{"execute": "query-status", "id": [1, "two"]}')
    assert r == {"return": {"running": False, "status": "prelaunch"}, "id": [1, "two"]}
    c.close()


def test_malformed_json_gets_generic_error_and_session_goes_on(server):
    c = Raw(server.address.path)
    c.send(b'{"execute": "qmp_capabilities"}')
    r = c.send(b'{"execute": ]\n')
    assert r["error"]["class"] == "GenericError"
    assert r["error"]["desc"].startswith("JSON parse error")
    r = c.send(b'["not", "an", "object"]')
    assert r["error"] == {"class": "GenericError", "desc": "QMP input must be a JSON object"}
    r = c.send(b'{"execute": "query-status", "arguments": {"verbose": true}}')
    assert r["error"] == {"class": "GenericError", "desc": "Parameter 'verbose' is unexpected"}
    assert c.send(b'{"execute": "query-status"}')["return"]["status"] == "prelaunch"
    c.close()


@pytest.mark.parametrize("payload", [b'{"a": "\xff"}', None], ids=["not-utf8", "huge"])
def test_unparseable_input_drops_only_that_client(server, vmm, payload):
    other = Raw(server.address.path)
    other.send(b'{"execute": "qmp_capabilities"}')
    bad = Raw(server.address.path)
    if payload is None:  # above the 64 KiB cap of the fixture's server
        bad.sock.sendall(b'{"execute": "' + b"x" * (80 << 10))
    else:
        bad.sock.sendall(payload)
    r = bad.read()
    assert r["error"]["class"] == "GenericError"
    assert bad.read() is None  # then the server hangs up
    bad.close()
    assert other.send(b'{"execute": "query-status"}')["return"]["status"] == "prelaunch"
    other.close()


def test_client_vanishing_mid_message_leaves_the_server_serving(server):
    for _ in range(3):
        c = Raw(server.address.path)
        c.sock.sendall(b'{"execute": "qmp_capa')
        c.close()
    c = Raw(server.address.path)
    assert c.send(b'{"execute": "qmp_capabilities"}') == {"return": {}}
    c.close()


def test_close_removes_the_socket(vmm, short_tmp):
    from kvmlite.api.address import SocketAddress
    from kvmlite.api.qmp_server import QmpServer

    path = short_tmp / "m.sock"
    s = QmpServer(vmm, SocketAddress(path=path))
    s.start()
    assert path.is_socket()
    s.close()
    assert not path.exists()


def test_tcp_listener(vmm):
    from kvmlite.api.address import SocketAddress
    from kvmlite.api.qmp_server import QmpServer

    s = QmpServer(vmm, SocketAddress.parse("tcp:127.0.0.1:0,server,nowait"))
    s.start()
    try:

        async def go():
            qmp = QMPClient("tcp")
            await qmp.connect(("127.0.0.1", s.address.port))
            r = await qmp.execute("query-status")
            await qmp.disconnect()
            return r

        assert run(go())["status"] == "prelaunch"
    finally:
        s.close()

"""A small synchronous QMP client (what ``kvmlite pause|resume|stop|powerdown`` use).

It reads the greeting, negotiates capabilities and then runs one command at
a time, skipping events (docs/interop/qmp-spec.rst). The tests judge the
server with qemu.qmp instead, which is independent of this module.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from kvmlite.api.address import SocketAddress
from kvmlite.api.qmp import QmpError


class QmpClient:
    def __init__(self, address: SocketAddress, timeout: float = 10.0) -> None:
        self._sock: socket.socket = address.connect(timeout)
        self._file = self._sock.makefile("rb")
        self.greeting = self._read()
        if "QMP" not in self.greeting:
            self.close()
            raise OSError(f"{address} is not a QMP monitor (greeting: {self.greeting!r})")
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self._file.readline(1 << 20)
        if not line:
            raise EOFError("the QMP monitor closed the connection")
        msg = json.loads(line)
        if not isinstance(msg, dict):
            raise OSError(f"not a QMP message: {line!r}")
        return msg

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``command``; its "return" value, or QmpError with the server's class."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._sock.sendall(json.dumps(msg).encode())
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                err = reply["error"]
                raise QmpError(str(err.get("class")), str(err.get("desc")))
            return reply.get("return")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

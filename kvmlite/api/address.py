"""Monitor socket addresses in QEMU's ``-qmp`` spelling.

``unix:PATH`` or ``tcp:HOST:PORT`` (QEMU's chardev socket backend,
docs/system/invocation ``-chardev socket``), optionally followed by
``,server``, ``,nowait``, ``,server=on``, ``,wait=off``: kvmlite is always
the listening side and never waits for a client before running the guest,
so those are accepted and anything else (``server=off``, ``wait=on``) is
refused.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from kvmlite.errors import ConfigError

#: sun_path is 108 bytes with the terminating NUL.
MAX_UNIX_PATH = 107

_ACCEPTED = {"server", "server=on", "nowait", "wait=off"}


@dataclass(frozen=True)
class SocketAddress:
    """A unix socket path, or a TCP host and port (port 0: any free one)."""

    path: Path | None = None
    host: str = ""
    port: int = 0

    def __post_init__(self) -> None:
        if self.path is not None:
            if len(str(self.path).encode()) > MAX_UNIX_PATH:
                raise ConfigError(
                    f"unix socket path {self.path} is longer than {MAX_UNIX_PATH} bytes"
                )
        elif not self.host or not 0 <= self.port <= 65535:
            raise ConfigError(f"bad TCP address {self.host!r}:{self.port}")

    @classmethod
    def parse(cls, spec: str) -> SocketAddress:
        kind, sep, rest = spec.partition(":")
        if not sep:
            raise ConfigError(f"bad monitor address {spec!r}: expected unix:PATH or tcp:HOST:PORT")
        target, *opts = rest.split(",")
        for opt in opts:
            if opt not in _ACCEPTED:
                raise ConfigError(
                    f"monitor address {spec!r}: option {opt!r} is not supported "
                    "(kvmlite always listens and never waits for a client)"
                )
        if kind == "unix":
            if not target:
                raise ConfigError(f"bad monitor address {spec!r}: empty path")
            return cls(path=Path(target))
        if kind == "tcp":
            host, sep, port = target.rpartition(":")
            host = host.strip("[]")
            if not sep or not port.isdigit():
                raise ConfigError(f"bad monitor address {spec!r}: expected tcp:HOST:PORT")
            return cls(host=host or "127.0.0.1", port=int(port))
        raise ConfigError(f"bad monitor address {spec!r}: expected unix:PATH or tcp:HOST:PORT")

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"

    def listen(self) -> socket.socket:
        """A listening socket bound to this address (a stale unix socket file is
        replaced; any other file at the path is an error)."""
        if self.path is not None:
            if self.path.is_socket():
                self.path.unlink()
            elif self.path.exists():
                raise ConfigError(f"{self.path} exists and is not a socket")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = str(self.path)
        else:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            target = (self.host, self.port)
        try:
            sock.bind(target)
            sock.listen(16)
        except OSError as e:
            sock.close()
            raise ConfigError(f"cannot listen on {self}: {e.strerror}") from None
        sock.setblocking(False)
        return sock

    def connect(self, timeout: float | None = 5.0) -> socket.socket:
        if self.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = str(self.path)
        else:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            target = (self.host, self.port)
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            raise
        return sock

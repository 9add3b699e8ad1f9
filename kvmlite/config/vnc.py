"""The VNC console: ``--vnc :N|HOST:N|unix:PATH`` (QEMU's -vnc syntax), docs/vnc.md.

``:N`` listens on the loopback only (QEMU's ``:N`` means every interface);
display N is TCP port 5900+N. The password file is read by the builder, not
here; ``check_host`` only checks it can be.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kvmlite.errors import ConfigError

VNC_BASE_PORT = 5900
#: Largest framebuffer side (kvmlite/devices/display/framebuffer.py has the same).
MAX_SIDE = 4096


@dataclass(frozen=True)
class VncAddress:
    """Where to listen: TCP host and port, or a unix socket path."""

    host: str = "127.0.0.1"
    port: int = VNC_BASE_PORT
    path: str | None = None

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port - VNC_BASE_PORT}"


def parse_vnc_address(spec: str) -> VncAddress:
    """QEMU's -vnc syntax: ``:N`` (loopback), ``HOST:N``, ``[V6]:N``, ``unix:PATH``."""
    if spec.startswith("unix:"):
        if not spec[5:]:
            raise ConfigError("--vnc unix:PATH needs a path")
        return VncAddress(path=spec[5:])
    host, sep, display = spec.rpartition(":")
    if not sep or not display.isdigit():
        raise ConfigError(f"--vnc {spec!r}: expected :N, HOST:N or unix:PATH (N = display number)")
    number = int(display)
    if not 0 <= number <= 65535 - VNC_BASE_PORT:
        raise ConfigError(f"--vnc {spec!r}: display {number} is out of range")
    host = host.strip("[]") or "127.0.0.1"
    return VncAddress(host=host, port=VNC_BASE_PORT + number)


@dataclass(frozen=True)
class VncConfig:
    """A framebuffer, keyboard and tablet served over VNC."""

    listen: str
    password_file: Path | None = None
    width: int = 800
    height: int = 600

    def __post_init__(self) -> None:
        parse_vnc_address(self.listen)  # raises ConfigError naming the problem
        for side in (self.width, self.height):
            if isinstance(side, bool) or not 0 < side <= MAX_SIDE:
                raise ConfigError(
                    f"--vnc-size {self.width}x{self.height}: width and height must be 1..{MAX_SIDE}"
                )

    @property
    def address(self) -> VncAddress:
        return parse_vnc_address(self.listen)

    def check_host(self) -> None:
        if self.password_file is not None and not Path(self.password_file).is_file():
            raise ConfigError(f"cannot read the VNC password file {self.password_file}")

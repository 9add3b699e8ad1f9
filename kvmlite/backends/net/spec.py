"""The ``-n`` network spec: which backend a virtio-net device gets, and opening it.

One parser for both users of a network backend: ``kvmlite run -n SPEC`` and
``kvmlite serve net SPEC``::

    user[,hostfwd=tcp::2222-:22]...[,mac=M]   passt, no root needed (default kind)
    tap[,ifname=NAME][,queues=N][,script=PATH][,downscript=PATH][,vnet_hdr=off][,mac=M]
    socket,listen=PATH[,mac=M] | socket,connect=PATH[,mac=M]   4-byte length framing
    none

A spec that starts with an option (``-n hostfwd=tcp::2222-:22``) or is empty
means ``user``. ``mac`` belongs to the device, everything else to the backend.
Parsing validates everything it can without touching the host, so a bad
command line fails before anything is built (DESIGN.md rule 7).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kvmlite.backends.net.base import NetBackend
from kvmlite.errors import ConfigError

KINDS = ("user", "tap", "socket", "none")
#: Options each kind takes (``mac`` and ``queues`` are checked by every kind that has them).
_OPTIONS = {
    "user": {"mac", "hostfwd"},
    "tap": {"mac", "ifname", "queues", "script", "downscript", "vnet_hdr"},
    "socket": {"mac", "listen", "connect"},
    "none": set(),
}
#: virtio-net allows 0x8000 queue pairs; a tap allows 256 queues (MAX_TAP_QUEUES).
MAX_QUEUES = 256
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


@dataclass
class NetSpec:
    """A parsed ``-n`` option."""

    kind: str = "user"
    mac: str | None = None
    queues: int = 1
    ifname: str | None = None
    script: str | None = None
    downscript: str | None = None
    vnet_hdr: bool = True
    listen: str | None = None
    connect: str | None = None
    hostfwd: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> NetSpec:
        parts = text.split(",") if text else []
        kind = "user"
        if parts and "=" not in parts[0]:
            kind = parts.pop(0)
        if kind not in KINDS:
            raise ConfigError(f"bad network {text!r}: the kind must be one of {', '.join(KINDS)}")
        spec = cls(kind)
        for opt in parts:
            key, eq, value = opt.partition("=")
            if key not in _OPTIONS[kind] or not eq or not value:
                known = ", ".join(sorted(f"{o}=..." for o in _OPTIONS[kind])) or "none"
                raise ConfigError(f"bad option {opt!r} in -n {text!r}: {kind} takes {known}")
            spec._set(key, value, text)
        spec._check(text)
        return spec

    def _set(self, key: str, value: str, text: str) -> None:
        if key == "mac":
            if not _MAC.fullmatch(value) or int(value[:2], 16) & 1:
                raise ConfigError(
                    f"bad mac {value!r} in -n {text!r}: "
                    "use a unicast address like 52:54:00:12:34:56"
                )
            self.mac = value.lower()
        elif key == "queues":
            if not value.isdigit() or not 1 <= int(value) <= MAX_QUEUES:
                raise ConfigError(f"bad queues {value!r} in -n {text!r}: use 1 to {MAX_QUEUES}")
            self.queues = int(value)
        elif key == "ifname":
            if not _IFNAME.fullmatch(value):
                raise ConfigError(
                    f"bad ifname {value!r} in -n {text!r}: at most 15 letters, digits, _ . -"
                )
            self.ifname = value
        elif key == "vnet_hdr":
            if value not in ("on", "off"):
                raise ConfigError(f"bad vnet_hdr {value!r} in -n {text!r}: use on or off")
            self.vnet_hdr = value == "on"
        elif key == "hostfwd":
            from kvmlite.backends.net.hostfwd import parse_hostfwd  # noqa: PLC0415

            parse_hostfwd(value)  # validate now; kept as text for the backend
            self.hostfwd.append(value)
        else:  # script, downscript, listen, connect: paths
            setattr(self, key, value)

    def _check(self, text: str) -> None:
        if self.kind == "socket" and (self.listen is None) == (self.connect is None):
            raise ConfigError(
                f"-n {text!r}: a socket network needs one of listen=PATH or connect=PATH"
            )

    def open(self, *, name: str = "net") -> list[NetBackend]:
        """Open the backend: one ``NetBackend`` per queue pair (empty for ``none``)."""
        if self.kind == "tap":
            from kvmlite.backends.net.tap import TapBackend  # noqa: PLC0415

            return list(
                TapBackend.open(
                    self.ifname,
                    queues=self.queues,
                    vnet_hdr=self.vnet_hdr,
                    script=self.script,
                    downscript=self.downscript,
                )
            )
        if self.kind == "user":
            from kvmlite.backends.net.hostfwd import parse_hostfwd  # noqa: PLC0415
            from kvmlite.backends.net.passt import PasstBackend  # noqa: PLC0415

            fwds = [parse_hostfwd(h) for h in self.hostfwd]
            return [PasstBackend.start(fwds, name=f"{name}-user")]
        if self.kind == "socket":
            from kvmlite.backends.net.socket_stream import StreamSocketBackend  # noqa: PLC0415

            if self.listen is not None:
                return [StreamSocketBackend.listen(self.listen, name=f"{name}-socket")]
            assert self.connect is not None
            return [StreamSocketBackend.connect(self.connect, name=f"{name}-socket")]
        return []

"""A network interface: which backend a virtio-net device gets (``-n``).

One parser for both users of a network backend: ``kvmlite run -n SPEC`` and
``kvmlite serve net SPEC``::

    user[,hostfwd=tcp::2222-:22]...[,mac=M]   passt, no root needed (default kind)
    tap[,ifname=NAME][,queues=N][,script=PATH][,downscript=PATH][,vnet_hdr=off][,mac=M]
    socket,listen=PATH[,mac=M] | socket,connect=PATH[,mac=M]   4-byte length framing
    none

A spec that starts with an option (``-n hostfwd=tcp::2222-:22``) or is empty
means ``user``. ``mac`` belongs to the device, everything else to the backend.
Parsing validates everything it can without touching the host, so a bad
command line fails before anything is built (DESIGN.md rule 7); the backend
is opened by ``kvmlite.backends.net.open_net``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, fields

from kvmlite.errors import ConfigError


class NetKind(enum.Enum):
    USER = "user"
    TAP = "tap"
    SOCKET = "socket"
    NONE = "none"


KINDS = tuple(k.value for k in NetKind)
#: Options each kind takes (``mac`` and ``queues`` are checked by every kind that has them).
_OPTIONS = {
    NetKind.USER: {"mac", "hostfwd"},
    NetKind.TAP: {"mac", "ifname", "queues", "script", "downscript", "vnet_hdr"},
    NetKind.SOCKET: {"mac", "listen", "connect"},
    NetKind.NONE: set(),
}
#: virtio-net allows 0x8000 queue pairs; a tap allows 256 queues (MAX_TAP_QUEUES).
MAX_QUEUES = 256
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


@dataclass(frozen=True)
class NetConfig:
    """A parsed ``-n`` option (``id`` is the management API's ``iface_id``)."""

    kind: NetKind = NetKind.USER
    mac: str | None = None
    queues: int = 1
    ifname: str | None = None
    script: str | None = None
    downscript: str | None = None
    vnet_hdr: bool = True
    listen: str | None = None
    connect: str | None = None
    hostfwd: tuple[str, ...] = ()
    id: str = ""

    def __post_init__(self) -> None:
        text = self.spec_text()
        if self.mac is not None and (not _MAC.fullmatch(self.mac) or int(self.mac[:2], 16) & 1):
            raise ConfigError(
                f"bad mac {self.mac!r} in -n {text!r}: use a unicast address like 52:54:00:12:34:56"
            )
        if isinstance(self.queues, bool) or not 1 <= self.queues <= MAX_QUEUES:
            raise ConfigError(f"bad queues {self.queues!r} in -n {text!r}: use 1 to {MAX_QUEUES}")
        if self.ifname is not None and not _IFNAME.fullmatch(self.ifname):
            raise ConfigError(
                f"bad ifname {self.ifname!r} in -n {text!r}: at most 15 letters, digits, _ . -"
            )
        if self.hostfwd:
            from kvmlite.backends.net.hostfwd import parse_hostfwd  # noqa: PLC0415

            for rule in self.hostfwd:
                parse_hostfwd(rule)  # validate now; kept as text for the backend
        if self.kind is NetKind.SOCKET and (self.listen is None) == (self.connect is None):
            raise ConfigError(
                f"-n {text!r}: a socket network needs one of listen=PATH or connect=PATH"
            )

    @classmethod
    def parse(cls, text: str, *, id: str = "") -> NetConfig:
        parts = text.split(",") if text else []
        kind_text = "user"
        if parts and "=" not in parts[0]:
            kind_text = parts.pop(0)
        if kind_text not in KINDS:
            raise ConfigError(f"bad network {text!r}: the kind must be one of {', '.join(KINDS)}")
        kind = NetKind(kind_text)
        opts: dict[str, object] = {}
        hostfwd: list[str] = []
        for opt in parts:
            key, eq, value = opt.partition("=")
            if key not in _OPTIONS[kind] or not eq or not value:
                known = ", ".join(sorted(f"{o}=..." for o in _OPTIONS[kind])) or "none"
                raise ConfigError(f"bad option {opt!r} in -n {text!r}: {kind_text} takes {known}")
            if key == "mac":
                opts["mac"] = value.lower() if _MAC.fullmatch(value) else value
            elif key == "queues":
                if not value.isdigit() or not 1 <= int(value) <= MAX_QUEUES:
                    raise ConfigError(f"bad queues {value!r} in -n {text!r}: use 1 to {MAX_QUEUES}")
                opts["queues"] = int(value)
            elif key == "vnet_hdr":
                if value not in ("on", "off"):
                    raise ConfigError(f"bad vnet_hdr {value!r} in -n {text!r}: use on or off")
                opts["vnet_hdr"] = value == "on"
            elif key == "hostfwd":
                hostfwd.append(value)
            else:  # ifname, script, downscript, listen, connect
                opts[key] = value
        return cls(kind, hostfwd=tuple(hostfwd), id=id, **opts)  # type: ignore[arg-type]

    def spec_text(self) -> str:
        """The ``-n`` text that parses back to this config (for messages)."""
        parts = [self.kind.value]
        defaults = NetConfig.__dataclass_fields__
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("kind", "id") or value == defaults[f.name].default:
                continue
            if f.name == "hostfwd":
                parts += [f"hostfwd={r}" for r in value]
            elif f.name == "vnet_hdr":
                parts.append("vnet_hdr=off")
            else:
                parts.append(f"{f.name}={value}")
        return ",".join(parts)


#: QEMU's default MAC prefix (52:54:00: locally administered); NIC n gets ...:56+n.
DEFAULT_MAC = 0x525400123456


def default_mac(index: int) -> str:
    """The MAC address of NIC ``index`` when the user gave none."""
    value = DEFAULT_MAC + index
    return ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))

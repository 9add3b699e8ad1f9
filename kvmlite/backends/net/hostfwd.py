"""Host port forwarding rules for user-mode networking: QEMU's ``hostfwd=`` syntax.

The text follows QEMU's ``-netdev user,hostfwd=`` rule (qemu-options.hx,
"hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport"): an empty
protocol means tcp, an empty host address means every host address. An IPv6
host address is written in brackets (``tcp:[::1]:2222-:22``), as in a URL.

passt (passt(1), ``-t``/``-u``) forwards a host port to the guest's one
address, the one it hands out by DHCP, so a guest address in a rule cannot
be honoured and is refused rather than silently ignored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from kvmlite.errors import ConfigError

PROTOCOLS = ("tcp", "udp")

# proto ":" (hostaddr | "[" v6 "]") ":" hostport "-" guestaddr ":" guestport.
# The host address part may not hold ':' unless bracketed, so the split is unique.
_RULE = re.compile(
    r"(?P<proto>[^:]*):(?P<haddr>\[[^\]]*\]|[^:\[\]]*):(?P<hport>[^-]*)"
    r"-(?P<gaddr>\[[^\]]*\]|[^:\[\]]*):(?P<gport>.*)",
    re.DOTALL,
)

_EXAMPLE = "e.g. tcp::2222-:22 or udp:127.0.0.1:5353-:53"


@dataclass(frozen=True)
class HostFwd:
    """One forwarded port: connections to host_addr:host_port reach the guest's guest_port."""

    proto: str  # "tcp" | "udp"
    host_addr: str  # "" = all host addresses
    host_port: int
    guest_port: int

    def __str__(self) -> str:
        addr = f"[{self.host_addr}]" if ":" in self.host_addr else self.host_addr
        return f"{self.proto}:{addr}:{self.host_port}-:{self.guest_port}"


def _port(text: str, what: str, rule: str) -> int:
    # Only plain decimal digits: int() would also take "+22", " 22" and "2_2".
    if not text.isascii() or not text.isdigit():
        raise ConfigError(
            f"hostfwd {rule!r}: {what} {text!r} is not a port number (1..65535); {_EXAMPLE}"
        )
    port = int(text)
    if not 1 <= port <= 65535:
        raise ConfigError(f"hostfwd {rule!r}: {what} {port} is outside 1..65535; {_EXAMPLE}")
    return port


def _host_addr(text: str, rule: str) -> str:
    bracketed = text.startswith("[") and text.endswith("]")
    inner = text[1:-1] if bracketed else text
    if not inner:
        if bracketed:
            raise ConfigError(f"hostfwd {rule!r}: empty brackets for the host address; {_EXAMPLE}")
        return ""
    try:
        addr = ipaddress.ip_address(inner)
    except ValueError:
        raise ConfigError(
            f"hostfwd {rule!r}: host address {inner!r} is not an IPv4 or IPv6 address"
            " (host names are not resolved; leave it empty for all addresses)"
        ) from None
    if addr.version == 6 and not bracketed:  # unreachable through _RULE, kept for clarity
        raise ConfigError(f"hostfwd {rule!r}: write an IPv6 host address in brackets")
    if addr.version == 4 and bracketed:
        raise ConfigError(f"hostfwd {rule!r}: brackets are for IPv6 addresses only")
    return str(addr)


def parse_hostfwd(text: str) -> HostFwd:
    """Parse one rule, ``[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport``."""
    m = _RULE.fullmatch(text)
    if m is None:
        raise ConfigError(
            f"hostfwd {text!r} is not [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport;"
            f" {_EXAMPLE}"
        )
    proto = m["proto"] or "tcp"
    if proto not in PROTOCOLS:
        raise ConfigError(f"hostfwd {text!r}: protocol {proto!r} is not tcp or udp; {_EXAMPLE}")
    host_addr = _host_addr(m["haddr"], text)
    host_port = _port(m["hport"], "host port", text)
    if m["gaddr"]:
        raise ConfigError(
            f"hostfwd {text!r}: guest address {m['gaddr']!r} cannot be honoured: user-mode"
            " networking (passt) forwards to the guest's own address, the one its DHCP"
            f" hands out; leave it empty ({proto}:{m['haddr']}:{m['hport']}-:{m['gport']})"
        )
    guest_port = _port(m["gport"], "guest port", text)
    return HostFwd(proto, host_addr, host_port, guest_port)


def passt_args(fwds: Iterable[HostFwd]) -> list[str]:
    """passt's ``-t``/``-u`` options for the rules (passt(1), "--tcp-ports spec").

    Two rules on the same protocol and host port are refused here with the
    rules named, rather than by passt's "Overlapping port specifier".
    """
    args: list[str] = []
    seen: dict[tuple[str, int], HostFwd] = {}
    for f in fwds:
        if f.proto not in PROTOCOLS:
            raise ConfigError(f"hostfwd {f}: protocol {f.proto!r} is not tcp or udp")
        key = (f.proto, f.host_port)
        if key in seen:
            raise ConfigError(
                f"hostfwd {seen[key]} and {f} both forward {f.proto} host port {f.host_port};"
                " give each host port once"
            )
        seen[key] = f
        spec = f"{f.host_port}:{f.guest_port}"
        if f.host_addr:
            spec = f"{f.host_addr}/{spec}"
        args += ["-t" if f.proto == "tcp" else "-u", spec]
    return args

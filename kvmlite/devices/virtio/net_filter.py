"""virtio-net's receive filter pieces: MAC addresses and MAC tables.

Spec: virtio 1.2 §5.1.6.5.1 (packet receive filtering) and §5.1.6.5.2
(setting the MAC address filtering: two ``virtio_net_ctrl_mac`` tables,
unicast then multicast).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kvmlite.devices.virtio.net_spec import ETH_ALEN
from kvmlite.errors import ConfigError

#: Entries a MAC filter table holds (QEMU's MAC_TABLE_ENTRIES is 64); a longer
#: list is accepted and the filter lets all addresses of that kind through.
MAC_TABLE_ENTRIES = 64


def parse_mac(text: str) -> bytes:
    """``"52:54:00:12:34:56"`` -> 6 bytes; ConfigError for anything else."""
    parts = text.split(":")
    try:
        if len(parts) != ETH_ALEN or any(len(p) != 2 for p in parts):
            raise ValueError
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ConfigError(
            f"MAC address {text!r}: write six hex bytes, e.g. 52:54:00:12:34:56"
        ) from None
    if mac[0] & 1:
        raise ConfigError(f"MAC address {text}: a multicast address (low bit of byte 0 set)")
    return mac


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass(frozen=True)
class NetRxFilterState:
    promisc: bool
    allmulti: bool
    uni_macs: tuple[bytes, ...]
    multi_macs: tuple[bytes, ...]
    uni_overflow: bool
    multi_overflow: bool


def filter_accepts(
    dst: bytes,
    mac: bytes,
    *,
    allmulti: bool,
    multi_macs: tuple[bytes, ...],
    all_unicast: bool,
    uni_macs: tuple[bytes, ...],
) -> bool:
    """Whether a frame to ``dst`` passes the filter (not in promiscuous mode)."""
    if len(dst) < ETH_ALEN:
        return False
    if dst[0] & 1:  # multicast or broadcast
        return dst == b"\xff" * ETH_ALEN or allmulti or dst in multi_macs
    return dst == mac or all_unicast or dst in uni_macs


MacTable = tuple[tuple[bytes, ...], bool]


def parse_mac_tables(data: bytes) -> tuple[MacTable, MacTable] | None:
    """Two ``virtio_net_ctrl_mac`` (le32 entries + entries*6 bytes): unicast, multicast.

    Each comes back as (addresses, overflow): a list longer than
    ``MAC_TABLE_ENTRIES`` is not kept, it lets every address of its kind pass.
    """
    tables: list[MacTable] = []
    pos = 0
    for _ in range(2):
        if len(data) < pos + 4:
            return None
        n = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        if len(data) < pos + n * ETH_ALEN:
            return None
        if n > MAC_TABLE_ENTRIES:
            tables.append(((), True))
        else:
            macs = tuple(data[pos + i * ETH_ALEN : pos + (i + 1) * ETH_ALEN] for i in range(n))
            tables.append((macs, False))
        pos += n * ETH_ALEN
    if pos != len(data):
        return None
    return tables[0], tables[1]

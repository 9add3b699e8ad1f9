"""virtio-net's control virtqueue (virtio 1.2 §5.1.6.5).

A helper that ``VirtioNet`` owns (composition: it holds the device and
changes only the receive-filter fields the commands name). It reads one
command per chain (class, command, data), applies RX mode, MAC address, MAC
tables, announce acks and the queue-pair count, and answers VIRTIO_NET_OK or
VIRTIO_NET_ERR in the chain's last writable byte. A chain with no room for
the ack, or shorter than a class + command, is a guest error (ChainError:
the base class returns it and sets NEEDS_RESET).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from kvmlite.devices.virtio.net_filter import parse_mac_tables
from kvmlite.devices.virtio.net_spec import (
    ETH_ALEN,
    VIRTIO_NET_CTRL_ANNOUNCE,
    VIRTIO_NET_CTRL_ANNOUNCE_ACK,
    VIRTIO_NET_CTRL_MAC,
    VIRTIO_NET_CTRL_MAC_ADDR_SET,
    VIRTIO_NET_CTRL_MAC_TABLE_SET,
    VIRTIO_NET_CTRL_MQ,
    VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN,
    VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
    VIRTIO_NET_CTRL_RX,
    VIRTIO_NET_CTRL_RX_ALLMULTI,
    VIRTIO_NET_CTRL_RX_PROMISC,
    VIRTIO_NET_ERR,
    VIRTIO_NET_F_CTRL_MAC_ADDR,
    VIRTIO_NET_F_CTRL_RX,
    VIRTIO_NET_F_GUEST_ANNOUNCE,
    VIRTIO_NET_F_MQ,
    VIRTIO_NET_OK,
)
from kvmlite.devices.virtio.queue import ChainError

if TYPE_CHECKING:
    from kvmlite.devices.virtio.net import VirtioNet

#: Largest control message read (a MAC table of ~170000 addresses); a longer
#: one is answered VIRTIO_NET_ERR unread.
MAX_CTRL_LEN = 1 << 20


class NetControlQueue:
    """The control queue of one ``VirtioNet`` (called with the device's lock held)."""

    def __init__(self, net: VirtioNet) -> None:
        self.net = net

    def handle(self) -> None:
        net = self.net
        q, mem = net.queues[net.ctrl_queue], net.memory
        assert mem is not None
        done = False
        while (chain := q.pop(mem)) is not None:
            if not chain.writable or chain.writable_len < 1:
                raise ChainError(chain.head, "control command without a writable ack byte")
            if chain.readable_len < 2:
                raise ChainError(chain.head, "control command shorter than class + command")
            ack = VIRTIO_NET_ERR
            if chain.readable_len <= MAX_CTRL_LEN:
                msg = chain.read_all(mem)
                if self._ctrl_command(msg[0], msg[1], msg[2:]):
                    ack = VIRTIO_NET_OK
            # The ack is the chain's last writable byte (§5.1.6.5).
            last = [d for d in chain.writable if d.length][-1]
            mem.write(last.addr + last.length - 1, bytes([ack]))
            q.add_used(mem, chain.head, 1)
            done = True
        if done:
            net.signal_queue(net.ctrl_queue)

    def _ctrl_command(self, cls: int, cmd: int, data: bytes) -> bool:
        """Apply one control command; True for VIRTIO_NET_OK."""
        net = self.net
        if cls == VIRTIO_NET_CTRL_RX and net.has_feature(VIRTIO_NET_F_CTRL_RX):
            if cmd not in (VIRTIO_NET_CTRL_RX_PROMISC, VIRTIO_NET_CTRL_RX_ALLMULTI):
                return False
            if len(data) != 1:
                return False
            if cmd == VIRTIO_NET_CTRL_RX_PROMISC:
                net.promisc = bool(data[0])
            else:
                net.allmulti = bool(data[0])
            return True
        if cls == VIRTIO_NET_CTRL_MAC:
            if cmd == VIRTIO_NET_CTRL_MAC_ADDR_SET and net.has_feature(VIRTIO_NET_F_CTRL_MAC_ADDR):
                if len(data) != ETH_ALEN:
                    return False
                net.mac = bytes(data)
                return True
            if cmd == VIRTIO_NET_CTRL_MAC_TABLE_SET and net.has_feature(VIRTIO_NET_F_CTRL_RX):
                tables = parse_mac_tables(data)
                if tables is None:
                    return False
                (net.uni_macs, net.uni_overflow), (net.multi_macs, net.multi_overflow) = tables
                return True
            return False
        if cls == VIRTIO_NET_CTRL_ANNOUNCE and net.has_feature(VIRTIO_NET_F_GUEST_ANNOUNCE):
            if cmd != VIRTIO_NET_CTRL_ANNOUNCE_ACK or data:
                return False
            net.announce_pending = False
            return True
        if cls == VIRTIO_NET_CTRL_MQ and net.has_feature(VIRTIO_NET_F_MQ):
            if cmd != VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET or len(data) != 2:
                return False
            n = struct.unpack("<H", data)[0]
            if not VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN <= n <= net.pairs:
                return False
            net.active_pairs = n
            return True
        return False

"""virtio-net, the network device (virtio 1.2 §5.1, "Network Device").

Theory of operation
-------------------
Queues: ``receiveq0, transmitq0, ..., receiveqN-1, transmitqN-1, controlq``
(§5.1.2); pair ``i`` has its own backend (a multiqueue tap has one fd per
pair). Every frame between device and driver starts with the 12-byte
``virtio_net_hdr`` (with VIRTIO_F_VERSION_1 it always has ``num_buffers``).
A backend with ``vnet_hdr`` takes and gives frames with that header, so the
checksum/TSO offload features are offered and the header passes through;
otherwise the device strips it on transmit and prepends a zero header on
receive, and offers no offloads.

Receive and back-pressure: the VMM calls ``handle_rx(pair)`` when the
backend's fd is readable. Frames are read into ``pending`` (a FIFO per pair)
and copied into the guest's receive buffers. A frame that does not find
enough buffers stays first in ``pending``; then ``handle_rx`` returns False
without reading more, and the VMM stops watching the fd until the device
calls ``rx_ready_handler(pair)``, which happens when the guest adds buffers
and ``pending`` drained. Frames are only dropped where a NIC drops them: the
receive filter (§5.1.6.5.1/2) refused them, they cannot fit even an empty
non-mergeable buffer, or the driver reset the device; each drop is counted
in ``stats`` and logged.

With VIRTIO_NET_F_MRG_RXBUF one frame may span several chains; the first
chain's header carries ``num_buffers``. Without it, a frame goes into one
chain, which must hold header and frame.

Transmit: each chain is header + frame, readable only. A chain with
writable buffers, shorter than the header, or longer than
``MAX_FRAME_LEN`` + header is a driver bug: the base class returns it and
sets NEEDS_RESET (DESIGN.md rule 6). While ``backend.can_send()`` is False
chains stay in the ring; the VMM calls ``tx_ready(pair)`` once the backend
drained its output.

Control queue (§5.1.6.5): RX mode (promisc, allmulti), MAC table, MAC
address, announce ack and multiqueue pairs; each answers VIRTIO_NET_OK or
VIRTIO_NET_ERR in the chain's last writable byte.
"""

from __future__ import annotations

import collections
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kvmlite.devices.persist import Persist
from kvmlite.devices.virtio.device import VirtioDevice, VirtioDeviceState
from kvmlite.devices.virtio.net_ctrl import NetControlQueue
from kvmlite.devices.virtio.net_filter import (  # noqa: F401 - parse_mac/format_mac: API
    MAC_TABLE_ENTRIES,
    MacTable,
    NetRxFilterState,
    filter_accepts,
    format_mac,
    parse_mac,
    parse_mac_tables,
)
from kvmlite.devices.virtio.net_spec import (
    ETH_ALEN,
    FEATURE_REQUIRES,
    MAX_FRAME_LEN,
    NET_CONFIG,
    NUM_BUFFERS_OFFSET,
    OFFLOAD_FEATURES,
    VIRTIO_NET_F_CTRL_MAC_ADDR,
    VIRTIO_NET_F_CTRL_RX,
    VIRTIO_NET_F_CTRL_VQ,
    VIRTIO_NET_F_GUEST_ANNOUNCE,
    VIRTIO_NET_F_MAC,
    VIRTIO_NET_F_MQ,
    VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU,
    VIRTIO_NET_F_STATUS,
    VIRTIO_NET_S_ANNOUNCE,
    VIRTIO_NET_S_LINK_UP,
    VNET_HDR_LEN,
)
from kvmlite.devices.virtio.queue import ChainError, DescriptorChain
from kvmlite.devices.virtio.spec import VIRTIO_ID_NET, bit
from kvmlite.errors import ConfigError, StateError

log = logging.getLogger("kvmlite.devices.virtio")


class NetBackendLike(Protocol):
    """What virtio-net needs of ``kvmlite.backends.net`` backends."""

    vnet_hdr: bool

    def send(self, frame: bytes) -> None: ...
    def recv_frames(self) -> list[bytes]: ...
    def can_send(self) -> bool: ...
    def set_offloads(self, features: int) -> None: ...


@dataclass(frozen=True)
class VirtioNetState:
    device: VirtioDeviceState
    mac: bytes
    link_up: bool
    announce: bool
    active_pairs: int
    rx_filter: NetRxFilterState
    pending: tuple[tuple[bytes, ...], ...]


@dataclass
class NetStats:
    """Counters the VMM can show (like `ip -s link` on the guest side)."""

    tx_frames: int = 0
    rx_frames: int = 0
    rx_filtered: int = 0
    rx_oversize: int = 0
    rx_dropped_reset: int = 0


class VirtioNet(VirtioDevice, Persist[VirtioNetState]):
    """A virtio-net NIC over one backend per queue pair."""

    device_type = VIRTIO_ID_NET

    def __init__(
        self,
        backend: NetBackendLike | Sequence[NetBackendLike],
        *,
        mac: bytes | str,
        mtu: int = 1500,
        queue_size: int = 256,
        name: str = "virtio-net",
    ) -> None:
        backends = list(backend) if isinstance(backend, Sequence) else [backend]
        if not backends:
            raise ConfigError(f"{name}: needs at least one backend")
        if len({bool(b.vnet_hdr) for b in backends}) != 1:
            raise ConfigError(f"{name}: all queue pairs' backends must agree on vnet_hdr")
        if not 68 <= mtu <= 65535:
            raise ConfigError(f"{name}: MTU {mtu} must be between 68 and 65535")
        self.mac = parse_mac(mac) if isinstance(mac, str) else bytes(mac)
        if len(self.mac) != ETH_ALEN:
            raise ConfigError(f"{name}: a MAC address has 6 bytes, not {len(self.mac)}")
        if self.mac[0] & 1:
            raise ConfigError(f"{name}: {format_mac(self.mac)} is a multicast address")
        self.backends = backends
        self.pairs = len(backends)
        self.mtu = mtu
        self.vnet_hdr = bool(backends[0].vnet_hdr)
        features = (
            bit(VIRTIO_NET_F_MAC)
            | bit(VIRTIO_NET_F_STATUS)
            | bit(VIRTIO_NET_F_MTU)
            | bit(VIRTIO_NET_F_MRG_RXBUF)
            | bit(VIRTIO_NET_F_CTRL_VQ)
            | bit(VIRTIO_NET_F_CTRL_RX)
            | bit(VIRTIO_NET_F_CTRL_MAC_ADDR)
            | bit(VIRTIO_NET_F_GUEST_ANNOUNCE)
        )
        if self.vnet_hdr:
            features |= OFFLOAD_FEATURES
        if self.pairs > 1:
            features |= bit(VIRTIO_NET_F_MQ)
        super().__init__(
            name=name, queue_sizes=[queue_size] * (2 * self.pairs + 1), features=features
        )
        self.ctrl_queue = 2 * self.pairs
        self.ctrl = NetControlQueue(self)
        self.initial_mac = self.mac
        self.link_up = True
        self.announce_pending = False
        self.active_pairs = 1
        self.promisc = True
        self.allmulti = True
        self.uni_macs: tuple[bytes, ...] = ()
        self.multi_macs: tuple[bytes, ...] = ()
        self.uni_overflow = self.multi_overflow = False
        self.pending: list[collections.deque[bytes]] = [collections.deque() for _ in backends]
        self.throttled = [False] * self.pairs
        self.tx_blocked = [False] * self.pairs
        self.stats = NetStats()
        #: Called with a pair index when handle_rx may be called again.
        self.rx_ready_handler: Callable[[int], None] | None = None

    # -- features and config -------------------------------------------------------------

    def features_ok(self) -> bool:
        if not super().features_ok():
            return False
        return all(
            self.has_feature(need)
            for feat, need in FEATURE_REQUIRES.items()
            if self.has_feature(feat)
        )

    def config_bytes(self) -> bytes:
        status = (VIRTIO_NET_S_LINK_UP if self.link_up else 0) | (
            VIRTIO_NET_S_ANNOUNCE if self.announce_pending else 0
        )
        return NET_CONFIG.pack(self.mac, status, self.pairs, self.mtu)

    def set_link(self, up: bool) -> None:
        """Cable plugged in or pulled (the VMM's `set_link`); the guest is told."""
        with self.lock:
            if up != self.link_up:
                self.link_up = up
                self.config_changed()

    def announce(self) -> None:
        """Ask the guest to announce itself (gratuitous ARP), e.g. after migration."""
        with self.lock:
            if self.activated and self.has_feature(VIRTIO_NET_F_GUEST_ANNOUNCE):
                self.announce_pending = True
                self.config_changed()

    @property
    def mergeable(self) -> bool:
        return self.has_feature(VIRTIO_NET_F_MRG_RXBUF)

    # -- queues ----------------------------------------------------------------------------

    def handle_queue(self, index: int) -> None:
        if index == self.ctrl_queue:
            if self.has_feature(VIRTIO_NET_F_CTRL_VQ):
                self.ctrl.handle()
        elif index % 2:
            self._handle_tx(index // 2)
        else:
            self._flush_rx(index // 2)

    # -- transmit ----------------------------------------------------------------------------

    def tx_ready(self, pair: int) -> None:
        """The backend drained its output: send what the guest queued meanwhile."""
        self.process_queue(2 * pair + 1)

    def _handle_tx(self, pair: int) -> None:
        index = 2 * pair + 1
        q, mem, backend = self.queues[index], self.memory, self.backends[pair]
        assert mem is not None
        sent = False
        while True:
            if not backend.can_send():
                self.tx_blocked[pair] = True
                break
            chain = q.pop(mem)
            if chain is None:
                break
            if chain.writable:
                raise ChainError(chain.head, "transmit chain has device-writable buffers")
            n = chain.readable_len
            if n < VNET_HDR_LEN:
                raise ChainError(chain.head, f"transmit chain of {n} bytes < virtio-net header")
            if n > VNET_HDR_LEN + MAX_FRAME_LEN:
                raise ChainError(chain.head, f"transmit frame of {n - VNET_HDR_LEN} bytes")
            data = chain.read_all(mem)
            q.add_used(mem, chain.head, 0)
            sent = True
            self.stats.tx_frames += 1
            backend.send(data if self.vnet_hdr else data[VNET_HDR_LEN:])
        self.tx_blocked[pair] = not backend.can_send()
        if sent:
            self.signal_queue(index)

    # -- receive ------------------------------------------------------------------------------

    def handle_rx(self, pair: int = 0) -> bool:
        """The pair's backend fd is readable. False: stop watching it until rx_ready.

        ``rx_ready_handler`` may be called from inside this method or any other
        entry point, with the device lock held: it should only re-arm the fd.
        """
        with self.lock:
            if self.tx_blocked[pair] and self.backends[pair].can_send():
                # The backend drained its output (its fd woke us): send the rest.
                self.process_queue(2 * pair + 1)
            # Deliver what already waits first; read more only once it is gone,
            # so frames keep their order and the backlog never grows past one batch.
            if self._rx_open(pair) and self.pending[pair]:
                self.process_queue(2 * pair)
            if self._rx_open(pair) and not self.pending[pair]:
                self.pending[pair].extend(self.backends[pair].recv_frames())
                self.process_queue(2 * pair)
            if self.pending[pair] or not self._rx_open(pair):
                self.throttled[pair] = True
                return False
            return True

    def _rx_open(self, pair: int) -> bool:
        return (
            self.activated
            and not self.broken
            and 2 * pair < len(self.queues)
            and self.queues[2 * pair].ready
        )

    def _flush_rx(self, pair: int) -> None:
        index = 2 * pair
        pending = self.pending[pair]
        delivered = False
        while pending:
            frame = pending[0]
            if not self._accept(frame):
                pending.popleft()
                self.stats.rx_filtered += 1
                continue
            result = self._deliver(index, frame)
            if result is None:
                break  # no buffers: keep the frame, back-pressure
            pending.popleft()
            if result:
                delivered = True
                self.stats.rx_frames += 1
        if delivered:
            self.signal_queue(index)
        if self.throttled[pair] and not pending:
            self.throttled[pair] = False
            if self.rx_ready_handler is not None:
                self.rx_ready_handler(pair)

    def _accept(self, frame: bytes) -> bool:
        """The receive filter (§5.1.6.5.1, §5.1.6.5.2); only with CTRL_RX."""
        if self.promisc or not self.has_feature(VIRTIO_NET_F_CTRL_RX):
            return True
        off = VNET_HDR_LEN if self.vnet_hdr else 0
        return filter_accepts(
            frame[off : off + ETH_ALEN],
            self.mac,
            allmulti=self.allmulti or self.multi_overflow,
            multi_macs=self.multi_macs,
            all_unicast=self.uni_overflow,
            uni_macs=self.uni_macs,
        )

    def _deliver(self, index: int, frame: bytes) -> bool | None:
        """Copy one frame into receive buffers: True done, False dropped, None no buffers."""
        q, mem = self.queues[index], self.memory
        assert mem is not None
        if self.vnet_hdr:
            if len(frame) < VNET_HDR_LEN:
                self.stats.rx_oversize += 1
                log.warning("%s: backend frame shorter than its virtio-net header", self.name)
                return False
            data = bytearray(frame)
        else:
            data = bytearray(VNET_HDR_LEN) + frame
        if len(data) > VNET_HDR_LEN + MAX_FRAME_LEN:
            self.stats.rx_oversize += 1
            log.warning("%s: dropped a %d-byte frame from the backend", self.name, len(data))
            return False
        # The per-buffer loop is the receive path's cost (a 64 KiB frame takes
        # ~16 of Linux's 4 KiB mergeable buffers): keep it to locals.
        mergeable = self.mergeable
        total = len(data)
        chains: list[tuple[DescriptorChain, int]] = []
        done = 0
        while done < total:
            chain = q.pop(mem)
            if chain is None:
                for _ in chains:
                    q.go_back()
                return None
            descriptors = chain.descriptors
            if not descriptors[0].writable:
                raise ChainError(chain.head, "receive chain has device-readable buffers")
            room = descriptors[0].length if len(descriptors) == 1 else chain.writable_len
            if not chains and room < VNET_HDR_LEN:
                raise ChainError(chain.head, f"receive buffer of {room} bytes < header")
            if not mergeable and room < total:
                # Without mergeable buffers the frame must fit one chain: the
                # driver sized its buffers for a smaller frame (MTU/offloads).
                q.add_used(mem, chain.head, 0)
                self.signal_queue(index)
                self.stats.rx_oversize += 1
                log.warning(
                    "%s: dropped a %d-byte frame: receive buffer holds %d",
                    self.name,
                    total - VNET_HDR_LEN,
                    room - VNET_HDR_LEN,
                )
                return False
            n = min(room, total - done)
            chains.append((chain, n))
            done += n
        struct.pack_into("<H", data, NUM_BUFFERS_OFFSET, len(chains) if mergeable else 1)
        pos = 0
        view = memoryview(data)
        for chain, n in chains:
            chain.write_all(mem, view[pos : pos + n])
            q.add_used(mem, chain.head, n, publish=False)
            pos += n
        # All of the frame's buffers become used at once (§5.1.6.4.2): a driver
        # running concurrently (another vCPU, a vhost-user front-end's guest)
        # that saw the first one alone would drop the frame as "buffers missing".
        q.publish_used(mem)
        return True

    # -- control queue -------------------------------------------------------------------------

    # -- lifecycle and state ---------------------------------------------------------------------

    def on_activate(self) -> None:
        for b in self.backends:
            b.set_offloads(self.acked_features)
        for pair in range(self.pairs):
            if self.queues[2 * pair].ready:
                self.process_queue(2 * pair)  # guest errors handled there, not raised
            if self.throttled[pair] and not self.pending[pair]:
                self.throttled[pair] = False
                if self.rx_ready_handler is not None:
                    self.rx_ready_handler(pair)

    def on_reset(self) -> None:
        dropped = sum(len(p) for p in self.pending)
        if dropped:
            self.stats.rx_dropped_reset += dropped
            log.info("%s: driver reset; %d received frames dropped", self.name, dropped)
        for p in self.pending:
            p.clear()
        self.mac = self.initial_mac
        self.announce_pending = False
        self.active_pairs = 1
        self.promisc = self.allmulti = True
        self.uni_macs = self.multi_macs = ()
        self.uni_overflow = self.multi_overflow = False
        self.tx_blocked = [False] * self.pairs
        # Throttled pairs stay throttled until activation wakes them: the fd is
        # not watched, and nothing can be delivered until DRIVER_OK.

    def save(self) -> VirtioNetState:
        with self.lock:
            return VirtioNetState(
                device=self.save_base(),
                mac=self.mac,
                link_up=self.link_up,
                announce=self.announce_pending,
                active_pairs=self.active_pairs,
                rx_filter=NetRxFilterState(
                    self.promisc,
                    self.allmulti,
                    self.uni_macs,
                    self.multi_macs,
                    self.uni_overflow,
                    self.multi_overflow,
                ),
                pending=tuple(tuple(p) for p in self.pending),
            )

    def load_state(self, state: VirtioNetState) -> None:
        with self.lock:
            if len(state.pending) != self.pairs:
                raise StateError(
                    f"{self.name}: {len(state.pending)} queue pairs in the snapshot, this device"
                    f" has {self.pairs}: restore with the same network options"
                )
            if len(state.mac) != ETH_ALEN:
                raise StateError(f"{self.name}: snapshot MAC address is not 6 bytes")
            self.restore_base(state.device)
            self.mac = state.mac
            self.link_up = state.link_up
            self.announce_pending = state.announce
            self.active_pairs = state.active_pairs
            f = state.rx_filter
            self.promisc, self.allmulti = f.promisc, f.allmulti
            self.uni_macs, self.multi_macs = f.uni_macs, f.multi_macs
            self.uni_overflow, self.multi_overflow = f.uni_overflow, f.multi_overflow
            self.pending = [collections.deque(p) for p in state.pending]
            # Frames waiting from before: the fd must not be read until they went out.
            self.throttled = [bool(p) for p in self.pending]

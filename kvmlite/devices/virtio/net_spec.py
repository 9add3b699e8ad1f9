"""Constants and structs of the virtio network device (virtio 1.2 §5.1).

Names follow the spec and include/uapi/linux/virtio_net.h so a reader can
grep either: §5.1.3 feature bits, §5.1.4 config space, §5.1.6 the
``virtio_net_hdr`` and §5.1.6.5 the control virtqueue.
"""

from __future__ import annotations

import struct

from kvmlite.devices.virtio.spec import bit

# §5.1.3 Feature bits
VIRTIO_NET_F_CSUM = 0
VIRTIO_NET_F_GUEST_CSUM = 1
VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2
VIRTIO_NET_F_MTU = 3
VIRTIO_NET_F_MAC = 5
VIRTIO_NET_F_GUEST_TSO4 = 7
VIRTIO_NET_F_GUEST_TSO6 = 8
VIRTIO_NET_F_GUEST_ECN = 9
VIRTIO_NET_F_GUEST_UFO = 10
VIRTIO_NET_F_HOST_TSO4 = 11
VIRTIO_NET_F_HOST_TSO6 = 12
VIRTIO_NET_F_HOST_ECN = 13
VIRTIO_NET_F_HOST_UFO = 14
VIRTIO_NET_F_MRG_RXBUF = 15
VIRTIO_NET_F_STATUS = 16
VIRTIO_NET_F_CTRL_VQ = 17
VIRTIO_NET_F_CTRL_RX = 18
VIRTIO_NET_F_CTRL_VLAN = 19
VIRTIO_NET_F_GUEST_ANNOUNCE = 21
VIRTIO_NET_F_MQ = 22
VIRTIO_NET_F_CTRL_MAC_ADDR = 23

#: Offloads that only make sense when the backend carries a virtio-net header
#: (a tap with IFF_VNET_HDR): without one, nobody would finish a partial
#: checksum or segment a 64 KiB TSO frame.
OFFLOAD_FEATURES = (
    bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN)
    | bit(VIRTIO_NET_F_GUEST_UFO)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_HOST_ECN)
    | bit(VIRTIO_NET_F_HOST_UFO)
)

#: §5.1.3.1: a feature the driver may only accept together with another one.
FEATURE_REQUIRES = {
    VIRTIO_NET_F_GUEST_TSO4: VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_TSO6: VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_UFO: VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_ECN: VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_HOST_TSO4: VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_HOST_TSO6: VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_HOST_UFO: VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_HOST_ECN: VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_CTRL_RX: VIRTIO_NET_F_CTRL_VQ,
    VIRTIO_NET_F_GUEST_ANNOUNCE: VIRTIO_NET_F_CTRL_VQ,
    VIRTIO_NET_F_MQ: VIRTIO_NET_F_CTRL_VQ,
    VIRTIO_NET_F_CTRL_MAC_ADDR: VIRTIO_NET_F_CTRL_VQ,
}

# §5.1.4 config space status bits
VIRTIO_NET_S_LINK_UP = 1
VIRTIO_NET_S_ANNOUNCE = 2

#: struct virtio_net_config up to mtu: mac[6], status, max_virtqueue_pairs, mtu.
NET_CONFIG = struct.Struct("<6sHHH")

# §5.1.6 struct virtio_net_hdr (with VIRTIO_F_VERSION_1 always 12 bytes, num_buffers included)
VIRTIO_NET_HDR = struct.Struct("<BBHHHHH")
VNET_HDR_LEN = VIRTIO_NET_HDR.size  # 12
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_ECN = 0x80
#: Offset of num_buffers inside the header.
NUM_BUFFERS_OFFSET = 10

# §5.1.6.5 control virtqueue: struct virtio_net_ctrl { u8 class; u8 command; data; u8 ack; }
VIRTIO_NET_OK = 0
VIRTIO_NET_ERR = 1
VIRTIO_NET_CTRL_RX = 0
VIRTIO_NET_CTRL_RX_PROMISC = 0
VIRTIO_NET_CTRL_RX_ALLMULTI = 1
VIRTIO_NET_CTRL_MAC = 1
VIRTIO_NET_CTRL_MAC_TABLE_SET = 0
VIRTIO_NET_CTRL_MAC_ADDR_SET = 1
VIRTIO_NET_CTRL_ANNOUNCE = 3
VIRTIO_NET_CTRL_ANNOUNCE_ACK = 0
VIRTIO_NET_CTRL_MQ = 4
VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0
VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN = 1
VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX = 0x8000

#: Largest Ethernet frame without the virtio-net header: a 64 KiB IP packet
#: (TSO/GSO) plus an Ethernet header with one VLAN tag.
MAX_FRAME_LEN = 65535 + 18
ETH_ALEN = 6

"""Constants of the virtio 1.2 specification (OASIS virtio-v1.2-cs01).

Names follow the spec and include/uapi/linux/virtio_*.h so a reader can grep
either: §2.1 device status, §2.2 feature bits, §5 device types, §6 reserved
feature bits.
"""

from __future__ import annotations

# §2.1 Device Status Field
VIRTIO_CONFIG_S_ACKNOWLEDGE = 1
VIRTIO_CONFIG_S_DRIVER = 2
VIRTIO_CONFIG_S_DRIVER_OK = 4
VIRTIO_CONFIG_S_FEATURES_OK = 8
VIRTIO_CONFIG_S_NEEDS_RESET = 0x40
VIRTIO_CONFIG_S_FAILED = 0x80

# §6 Reserved Feature Bits
VIRTIO_F_INDIRECT_DESC = 28
VIRTIO_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_ACCESS_PLATFORM = 33
VIRTIO_F_RING_PACKED = 34
VIRTIO_F_IN_ORDER = 35
VIRTIO_F_RING_RESET = 40

# §5 Device Types
VIRTIO_ID_NET = 1
VIRTIO_ID_BLOCK = 2
VIRTIO_ID_CONSOLE = 3
VIRTIO_ID_RNG = 4

# §2.7.5 split ring descriptor flags, §2.7.6/§2.7.8 ring flags
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
VIRTQ_USED_F_NO_NOTIFY = 1

#: The largest split queue the spec allows (§2.7: Queue Size up to 32768).
VIRTQ_MAX_SIZE = 32768

#: ISR status bits (§4.1.4.5), shared by virtio-mmio InterruptStatus (§4.2.2).
VIRTIO_ISR_QUEUE = 1
VIRTIO_ISR_CONFIG = 2


def bit(n: int) -> int:
    """The feature mask of feature bit ``n``."""
    return 1 << n

"""virtio 1.x device models: the split virtqueue, PCI and MMIO transports, devices.

Nothing here talks to KVM (DESIGN.md rule 1): a transport gets register
accesses, guest memory and interrupt objects; a device gets queues, memory
and backends. See docs/devices.md for how a program wires them up.
"""

from kvmlite.devices.virtio.blk import VirtioBlock, VirtioBlockState
from kvmlite.devices.virtio.console import VirtioConsole, VirtioConsoleState
from kvmlite.devices.virtio.device import VirtioDevice, VirtioDeviceState
from kvmlite.devices.virtio.executor import IoExecutor, SyncExecutor, ThreadPoolIoExecutor
from kvmlite.devices.virtio.mmio import (
    MMIO_SIZE,
    VirtioMmioDevice,
    VirtioMmioState,
    cmdline_fragment,
)
from kvmlite.devices.virtio.net import VirtioNet, VirtioNetState
from kvmlite.devices.virtio.pci import VirtioPciDevice, VirtioPciState
from kvmlite.devices.virtio.queue import (
    ChainError,
    Descriptor,
    DescriptorChain,
    QueueError,
    VirtQueue,
    VirtQueueState,
)
from kvmlite.devices.virtio.rng import VirtioRng, VirtioRngState
from kvmlite.devices.virtio.scsi import VirtioScsi, VirtioScsiState

__all__ = [
    "VirtioNet",
    "VirtioNetState",
    "MMIO_SIZE",
    "ChainError",
    "Descriptor",
    "DescriptorChain",
    "IoExecutor",
    "QueueError",
    "SyncExecutor",
    "ThreadPoolIoExecutor",
    "VirtQueue",
    "VirtQueueState",
    "VirtioBlock",
    "VirtioBlockState",
    "VirtioConsole",
    "VirtioConsoleState",
    "VirtioDevice",
    "VirtioDeviceState",
    "VirtioMmioDevice",
    "VirtioMmioState",
    "VirtioPciDevice",
    "VirtioPciState",
    "VirtioRng",
    "VirtioRngState",
    "VirtioScsi",
    "VirtioScsiState",
    "cmdline_fragment",
]

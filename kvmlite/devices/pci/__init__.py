"""PCI: config space, host bridge (mechanism #1 and ECAM), BARs, MSI-X, INTx routing."""

from kvmlite.devices.pci.config import Bar, BarKind, PciConfigSpace, PciConfigState
from kvmlite.devices.pci.device import BarBusDevice, BarInfo, PciDevice, PciDeviceState
from kvmlite.devices.pci.msix import MsixState, MsixTable
from kvmlite.devices.pci.root import (
    ECAM_SIZE,
    PCI_CONFIG_IO_BASE,
    PCI_CONFIG_IO_SIZE,
    IntxRoute,
    PciConfigIo,
    PciEcam,
    PciHostBridge,
    PciRoot,
    SharedIrqLine,
)

__all__ = [
    "ECAM_SIZE",
    "PCI_CONFIG_IO_BASE",
    "PCI_CONFIG_IO_SIZE",
    "Bar",
    "BarBusDevice",
    "BarInfo",
    "BarKind",
    "IntxRoute",
    "MsixState",
    "MsixTable",
    "PciConfigIo",
    "PciConfigSpace",
    "PciConfigState",
    "PciDevice",
    "PciDeviceState",
    "PciEcam",
    "PciHostBridge",
    "PciRoot",
    "SharedIrqLine",
]

"""qcow2 images, versions 2 and 3 (QEMU docs/interop/qcow2.txt)."""

from kvmlite.backends.block.qcow2.create import create_qcow2
from kvmlite.backends.block.qcow2.image import Qcow2Backend

__all__ = ["Qcow2Backend", "create_qcow2"]

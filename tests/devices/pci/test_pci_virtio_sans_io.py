"""DESIGN.md rule 1: the PCI and virtio device library loads without kvmlite.kvm."""

from __future__ import annotations

import subprocess
import sys


def test_device_library_never_imports_kvm() -> None:
    code = (
        "import sys\n"
        "import kvmlite.devices.pci, kvmlite.devices.virtio, kvmlite.testing\n"
        "bad = [m for m in sys.modules if m == 'kvmlite.kvm' or m.startswith('kvmlite.kvm.')]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

"""The default guest's power-button path in its initramfs: acpid started by /init and
the action busybox acpid runs for KEY_POWER (/etc/acpi/PWRF/00000080), checked by GNU
cpio and busybox sh. The real press is tests/api/test_powerdown_linux.py (slow)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kvmlite.guestimage.initramfs import (
    ACPI_POWER_SCRIPT,
    BUSYBOX_INIT,
    build_busybox_initramfs,
)


def test_acpid_and_its_power_action(tmp_path: Path) -> None:
    out = build_busybox_initramfs(tmp_path / "bb.cpio")
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], stdin=open(out, "rb"), capture_output=True, check=True
    ).stdout.decode()
    [row] = [r for r in listing.splitlines() if r.endswith(" etc/acpi/PWRF/00000080")]
    assert row.startswith("-rwxr-xr-x")
    assert any(r.endswith("sbin/acpid -> /bin/busybox") for r in listing.splitlines())
    subprocess.run(
        ["cpio", "-idm", "--quiet", "etc/acpi/PWRF/00000080"],
        stdin=open(out, "rb"),
        cwd=tmp_path,
        check=True,
    )
    assert (tmp_path / "etc/acpi/PWRF/00000080").read_bytes() == ACPI_POWER_SCRIPT
    subprocess.run(["/bin/busybox", "sh", "-n", "-c", ACPI_POWER_SCRIPT.decode()], check=True)
    assert "poweroff -f" in ACPI_POWER_SCRIPT.decode()
    # acpid starts before the shell, after /dev (its event devices) and /tmp (its log)
    lines = BUSYBOX_INIT.splitlines()
    acpid = next(i for i, line in enumerate(lines) if line.startswith("acpid "))
    assert lines.index("mount -t devtmpfs devtmpfs /dev") < acpid
    assert lines.index("mount -t tmpfs tmpfs /tmp") < acpid
    assert acpid < next(i for i, line in enumerate(lines) if "cttyhack" in line)

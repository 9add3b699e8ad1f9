"""``kvmlite img check``: run the qcow2 check (and repair), report like qemu-img.

Exit codes follow qemu-img: 0 clean, 1 check could not complete, 2 corruptions,
3 leaked clusters only, 63 the format has no checks (raw).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvmlite.backends.block import probe_format
from kvmlite.backends.block.qcow2 import Qcow2Backend
from kvmlite.backends.block.qcow2.check import CheckResult, check
from kvmlite.errors import ImageError


@dataclass
class CheckReport:
    filename: str
    format: str
    result: CheckResult | None
    fixed: CheckResult | None = None
    error: str | None = None

    def exit_code(self) -> int:
        r = self.result
        if self.format != "qcow2":
            return 63
        if r is None or r.check_errors:
            return 1
        if r.corruptions:
            return 2
        if r.leaks:
            return 3
        return 0

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"filename": self.filename, "format": self.format}
        r = self.result
        if r is None:
            out["check-errors"] = 1
            return out
        out["image-end-offset"] = r.image_end_offset
        out["total-clusters"] = r.total_clusters
        out["check-errors"] = r.check_errors
        if r.corruptions:
            out["corruptions"] = r.corruptions
        if r.leaks:
            out["leaks"] = r.leaks
        if self.fixed is not None:
            if self.fixed.leaks_fixed:
                out["leaks-fixed"] = self.fixed.leaks_fixed
            if self.fixed.corruptions_fixed:
                out["corruptions-fixed"] = self.fixed.corruptions_fixed
        out["allocated-clusters"] = r.allocated_clusters
        out["fragmented-clusters"] = r.fragmented_clusters
        out["compressed-clusters"] = r.compressed_clusters
        return out

    def lines(self) -> list[str]:
        if self.format != "qcow2":
            return [f"This image format ({self.format}) does not support checks"]
        r = self.result
        if r is None:
            return [f"An error occurred during the check: {self.error}"]
        out = list(r.messages)
        if r.dropped:
            out.append(f"... and {r.dropped} more messages like these")
        if self.fixed is not None:
            f = self.fixed
            out.append("The following inconsistencies were found and repaired:\n")
            out.append(f"    {f.leaks_fixed} leaked clusters")
            out.append(f"    {f.corruptions_fixed} corruptions\n")
            out.append("Double checking the fixed image now...")
        if not (r.corruptions or r.leaks or r.check_errors):
            out.append("No errors were found on the image.")
        if r.corruptions:
            out.append(
                f"\n{r.corruptions} errors were found on the image.\n"
                "Data may be corrupted, or further writes to the image may corrupt it."
            )
        if r.leaks:
            out.append(
                f"\n{r.leaks} leaked clusters were found on the image.\n"
                "This means waste of disk space, but no harm to data."
            )
        if r.check_errors:
            out.append(f"\n{r.check_errors} internal errors have occurred during the check.")
        total = max(r.total_clusters, 1)
        alloc = max(r.allocated_clusters, 1)
        out.append(
            f"{r.allocated_clusters}/{r.total_clusters} = "
            f"{100 * r.allocated_clusters / total:.2f}% allocated, "
            f"{100 * r.fragmented_clusters / alloc:.2f}% fragmented, "
            f"{100 * r.compressed_clusters / alloc:.2f}% compressed clusters"
        )
        out.append(f"Image end offset: {r.image_end_offset}")
        return out


def check_image(path: str, fmt: str | None, repair: str | None = None) -> CheckReport:
    fmt = fmt or probe_format(path)
    if fmt != "qcow2":
        return CheckReport(path, fmt, None)
    fixed = None
    try:
        if repair:
            from kvmlite.backends.block.imgops import repair_image

            fixed, result = repair_image(path, repair)
        else:
            with Qcow2Backend(path, read_only=True, open_backing=False) as q:
                result = check(q)
    except ImageError as e:
        return CheckReport(path, fmt, None, error=str(e))
    return CheckReport(path, fmt, result, fixed)

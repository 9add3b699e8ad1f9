"""Shared pieces of the benchmark harness: a result row and the table printer.

Every row compares kvmlite with a reference (QEMU, qemu-img, qemu-storage-daemon)
measured on the same work in the same run. The ratio is oriented so that
values above 1.0 mean kvmlite did better.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One measurement, kvmlite against a reference, in the same unit."""

    name: str
    kvmlite: float
    reference: float
    unit: str
    higher_is_better: bool
    reference_name: str = "QEMU"

    @property
    def ratio(self) -> float:
        """kvmlite relative to the reference; >1.0 means kvmlite is better."""
        if self.higher_is_better:
            return self.kvmlite / self.reference if self.reference else float("inf")
        return self.reference / self.kvmlite if self.kvmlite else float("inf")


def format_table(rows: list[Row]) -> str:
    """Render rows as a Markdown table, ready to paste into the README."""
    out = [
        "| benchmark | kvmlite | reference | unit | ratio (>1 = kvmlite better) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.name} | {r.kvmlite:.4g} | {r.reference:.4g} ({r.reference_name}) "
            f"| {r.unit} | {r.ratio:.2f}x |"
        )
    return "\n".join(out)

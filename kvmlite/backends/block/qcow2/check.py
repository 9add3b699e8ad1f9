"""Consistency check and refcount repair for qcow2 images (what ``qemu-img check`` does).

The check recomputes every cluster's reference count from the metadata
(header, L1/L2 tables of the active image and of every snapshot, data and
compressed clusters, refcount table and blocks, snapshot table) and compares
it with the stored refcounts:

* stored < computed: a *corruption* (a cluster could be handed out twice);
* stored > computed: a *leak* (wasted space, harmless);
* a table entry pointing outside the file or misaligned: a corruption;
* a COPIED flag that disagrees with a refcount of exactly 1: a corruption.

Repair rewrites the stored refcounts to the computed ones. Refcount blocks it
needs are allocated past the end of the file (``Refcounts.floor``), so repair
never hands out a cluster that is in use but was counted as free.
"""

from __future__ import annotations

import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvmlite.backends.block.qcow2.tables import (
    COMPRESSED,
    NORMAL,
    OFFSET_MASK,
    OFLAG_COPIED,
    ZERO_ALLOC,
    be_u64,
)
from kvmlite.errors import ImageError

if TYPE_CHECKING:
    from kvmlite.backends.block.qcow2.image import Qcow2Backend

MAX_MESSAGES = 50


@dataclass
class CheckResult:
    """Counts as ``qemu-img check --output=json`` reports them."""

    filename: str
    corruptions: int = 0
    leaks: int = 0
    check_errors: int = 0
    corruptions_fixed: int = 0
    leaks_fixed: int = 0
    image_end_offset: int = 0
    total_clusters: int = 0
    allocated_clusters: int = 0
    fragmented_clusters: int = 0
    compressed_clusters: int = 0
    messages: list[str] = field(default_factory=list)
    bad_blocks: set[int] = field(default_factory=set)
    dropped: int = 0

    def note(self, msg: str) -> None:
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(msg)
        else:
            self.dropped += 1


class _Walker:
    def __init__(self, img: Qcow2Backend, result: CheckResult) -> None:
        self.img = img
        self.r = result
        self.cs = img.cs
        self.nclusters = -(-img.f.length // self.cs)
        self.refs = array.array("Q", bytes(8 * self.nclusters))

    def inc(self, offset: int, length: int, what: str) -> bool:
        if length <= 0:
            return True
        first, last = offset // self.cs, (offset + length - 1) // self.cs
        if last >= self.nclusters:
            self.r.corruptions += 1
            self.r.note(f"ERROR {what} at offset {offset} is beyond the end of the file")
            return False
        for c in range(first, last + 1):
            self.refs[c] += 1
        return True

    def walk_l1(self, l1: array.array, active: bool) -> None:
        img, cs = self.img, self.cs
        prev = -1
        for i, e in enumerate(l1):
            off = e & OFFSET_MASK
            if not off:
                continue
            if off % cs:
                self.r.corruptions += 1
                self.r.note(f"ERROR L2 table offset {off:#x} (L1 index {i}) is misaligned")
                continue
            if not self.inc(off, cs, f"L2 table (L1 index {i})"):
                continue
            table = be_u64(img.f.pread(off, cs, "L2 table"))
            for j, entry in enumerate(table):
                kind, host = img.codec.classify(entry)
                if kind == COMPRESSED:
                    _o, start, span = img.codec.compressed_range(entry)
                    end = min(start + span, img.f.length)
                    self.inc(start, max(end - start, 1), "compressed cluster")
                    if active:
                        self.r.allocated_clusters += 1
                        self.r.compressed_clusters += 1
                    prev = -1
                elif kind in (NORMAL, ZERO_ALLOC):
                    if host % cs:
                        self.r.corruptions += 1
                        self.r.note(f"ERROR data cluster offset {host:#x} is misaligned")
                        continue
                    self.inc(host, cs, f"data cluster (L2 {off:#x} index {j})")
                    if active and kind == NORMAL:
                        self.r.allocated_clusters += 1
                        if prev >= 0 and host != prev + cs:
                            self.r.fragmented_clusters += 1
                        prev = host


def compute(img: Qcow2Backend, result: CheckResult) -> _Walker:
    """Count every reference to every cluster of ``img``."""
    h = img.header
    w = _Walker(img, result)
    cs = img.cs
    w.inc(0, cs, "header")
    w.inc(h.l1_table_offset, h.l1_size * 8, "L1 table")
    l1 = (
        img.l1
        if img.l1_offset == h.l1_table_offset
        else be_u64(img.f.pread(h.l1_table_offset, h.l1_size * 8, "L1 table"))
    )
    w.walk_l1(l1, active=True)
    for s in img.snapshots:
        if w.inc(s.l1_table_offset, s.l1_size * 8, f"snapshot {s.id!r} L1 table"):
            w.walk_l1(be_u64(img.f.pread(s.l1_table_offset, s.l1_size * 8, "L1")), False)
    if h.nb_snapshots:
        w.inc(h.snapshots_offset, img.snapshot_table_size, "snapshot table")
    rc = img.refcounts
    w.inc(rc.table_offset, rc.table_clusters * cs, "refcount table")
    for i, e in enumerate(rc.table):
        if not e:
            continue
        if e % cs:
            result.corruptions += 1
            result.note(f"ERROR refcount block {i} at {e:#x} is misaligned")
            continue
        w.inc(e, cs, f"refcount block {i}")
    result.total_clusters = -(-img.size // cs)
    return w


def _stored(img: Qcow2Backend, c: int, result: CheckResult) -> int:
    bidx = c // img.refcounts.per_block
    if bidx in result.bad_blocks:
        return 0
    try:
        return img.refcounts.get(c)
    except ImageError as e:
        result.check_errors += 1
        result.bad_blocks.add(bidx)
        result.note(f"ERROR cannot read refcount block {bidx}: {e}")
        return 0


def _limit(img: Qcow2Backend, w: _Walker) -> int:
    covered = 0
    for i, e in enumerate(img.refcounts.table):
        if e:
            covered = (i + 1) * img.refcounts.per_block
    return max(w.nclusters, min(covered, w.nclusters + (64 << 20) // img.cs))


def check(img: Qcow2Backend) -> CheckResult:
    """Check ``img`` (open it read-only, with ``open_backing=False``)."""
    r = CheckResult(img.filename)
    w = compute(img, r)
    for c in range(_limit(img, w)):
        ref = w.refs[c] if c < w.nclusters else 0
        stored = _stored(img, c, r)
        if stored == ref:
            continue
        if stored < ref:
            r.corruptions += 1
            r.note(f"ERROR cluster {c} refcount={stored} reference={ref}")
        else:
            r.leaks += 1
            r.note(f"Leaked cluster {c} refcount={stored} reference={ref}")
    _check_copied(img, r)
    r.image_end_offset = img.f.length
    return r


def _check_copied(img: Qcow2Backend, r: CheckResult, fix: bool = False) -> None:
    """COPIED must be set exactly when the refcount is 1 (active L1 and its L2 tables)."""
    cs = img.cs
    for i, e in enumerate(img.l1):
        off = e & OFFSET_MASK
        if not off or off % cs or off + cs > img.f.length:
            continue
        want = _stored(img, off // cs, r) == 1
        if bool(e & OFLAG_COPIED) != want:
            if fix:
                img.writer.set_l1(i, off | (OFLAG_COPIED if want else 0))
                r.corruptions_fixed += 1
            else:
                r.corruptions += 1
                r.note(f"ERROR OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={e:x}")
        table = img.l2.get(off)
        for j, entry in enumerate(table):
            kind, host = img.codec.classify(entry)
            if kind not in (NORMAL, ZERO_ALLOC) or host % cs or host + cs > img.f.length:
                continue
            want = _stored(img, host // cs, r) == 1
            if bool(entry & OFLAG_COPIED) != want:
                if fix:
                    flag = OFLAG_COPIED if want else 0
                    img.l2.set(off, j, (entry & ~OFLAG_COPIED) | flag)
                    r.corruptions_fixed += 1
                else:
                    r.corruptions += 1
                    r.note(f"ERROR OFLAG_COPIED data cluster: l2_entry={entry:x}")


def repair(img: Qcow2Backend, leaks: bool = True, errors: bool = True) -> CheckResult:
    """Rewrite stored refcounts to the computed ones (``check -r leaks|all``)."""
    r = CheckResult(img.filename)
    rc = img.refcounts
    if errors:
        # A refcount table entry that points outside the file or is misaligned
        # is dropped; the block is rebuilt from the computed counts below.
        for i, e in enumerate(rc.table):
            if e and (e % img.cs or e + img.cs > img.f.length):
                rc.table[i] = 0
                img.f.pwrite(rc.table_offset + i * 8, bytes(8))
                rc.forget(i)
                r.corruptions_fixed += 1
    w = compute(img, r)
    rc.floor = max(w.nclusters, rc.free_hint)
    try:
        for c in range(_limit(img, w)):
            ref = w.refs[c] if c < w.nclusters else 0
            stored = _stored(img, c, r)
            if stored > ref and leaks:
                rc.update(c, ref - stored)
                r.leaks_fixed += 1
            elif stored < ref and errors:
                rc.update(c, ref - stored)
                r.corruptions_fixed += 1
        if errors:
            _check_copied(img, r, fix=True)
    finally:
        rc.floor = 0
        rc.free_hint = 0
    img.f.sync()
    return r

"""Block I/O engines: where a disk's reads and writes run (``-d PATH,aio=...``).

``open_engine(name)`` makes one: ``threads``, ``native`` (Linux AIO) or
``io_uring``; ``None`` picks the default, DEFAULT_ORDER's first engine that
the kernel accepts here (docs/block-engines.md says why that order). An
engine the kernel or a policy refuses (ENOSYS, EPERM, a sysctl) falls back to
the next one with one log line; ``threads`` always works.
"""

from __future__ import annotations

import logging

from kvmlite.backends.block.engines.base import (
    ENGINES,
    Completion,
    EngineUnavailable,
    IoEngine,
    Job,
)
from kvmlite.backends.block.engines.threads import ThreadsEngine
from kvmlite.errors import ConfigError

log = logging.getLogger(__name__)

#: The default when no aio= is given (docs/block-engines.md, "The default"):
#: threads until io_uring's one unexplained failure in the guest benchmark is
#: understood and the guest-side numbers show it ahead on an idle host.
DEFAULT_ORDER = ("threads",)


def _make(name: str) -> IoEngine:
    if name == "threads":
        return ThreadsEngine()
    if name == "native":
        from kvmlite.backends.block.engines.native import NativeEngine

        return NativeEngine()
    if name == "io_uring":
        from kvmlite.backends.block.engines.uring import IoUringEngine

        return IoUringEngine()
    raise ConfigError(f"unknown I/O engine aio={name!r}: use one of {', '.join(ENGINES)}")


def open_engine(
    name: str | None = None, *, what: str = "disk", direct: bool | None = None
) -> IoEngine:
    """The engine ``name`` (None: the default), or the fallback with one log line.

    ``direct``: whether the disk is O_DIRECT (None: unknown); aio=native on a
    buffered file works but is synchronous, which gets one log line too.
    """
    order = DEFAULT_ORDER if name is None else (name, "threads")
    for i, candidate in enumerate(order):
        try:
            engine = _make(candidate)
            if engine.name == "native" and direct is False:
                log.info(
                    "%s: aio=native on a buffered file: Linux AIO then reads and writes "
                    "inside io_submit (no overlap); add direct for asynchronous I/O",
                    what,
                )
            return engine
        except EngineUnavailable as e:
            nxt = order[i + 1] if i + 1 < len(order) else None
            if nxt is None:
                raise
            log.warning(
                "%s: aio=%s is not available here (%s); using aio=%s", what, candidate, e, nxt
            )
    raise AssertionError("unreachable: threads never refuses")


__all__ = [
    "DEFAULT_ORDER",
    "ENGINES",
    "Completion",
    "EngineUnavailable",
    "IoEngine",
    "Job",
    "ThreadsEngine",
    "open_engine",
]

"""Restore as a constructor (DESIGN.md rule 4, "Restore is a constructor").

A stateful device saves itself as a frozen ``State`` dataclass (``save()``)
and is rebuilt from one with ``Device.restore(args, state)``: ``args`` are
the constructor's keyword arguments, which carry what cannot be serialised
(guest memory, interrupt lines, backends, callbacks, the already restored
device a transport carries), and ``state`` the rest. This is Firecracker's
``Persist`` trait (src/vmm/src/snapshot/persist.rs) in Python.

``load_state(state)`` applies a state to a device built already; the
machine-level restore (kvmlite/vmm/persist.py) uses it on the devices
``assemble(config)`` built, in the order written there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, Self, TypeVar

S = TypeVar("S")


class Persist(Generic[S]):
    """Mixin for a device whose state is an ``S``; it implements ``save``/``load_state``."""

    def save(self) -> S:
        raise NotImplementedError

    def load_state(self, state: S) -> None:
        raise NotImplementedError

    @classmethod
    def restore(cls, args: Mapping[str, Any], state: S) -> Self:
        """A new device built with ``cls(**args)``, in the saved ``state``."""
        device = cls(**args)
        device.load_state(state)
        return device

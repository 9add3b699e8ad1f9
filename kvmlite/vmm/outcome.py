"""How a machine ended, and the ``kvmlite run`` exit status for it."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ExitReason(enum.Enum):
    """How the guest ended; the CLI maps each to an exit status."""

    POWEROFF = "poweroff"
    REBOOT = "reboot"
    CRASH = "crash"
    ERROR = "error"
    DEBUG_EXIT = "debug-exit"
    QUIT = "quit"


#: ``kvmlite run`` exit statuses (documented in the README).
EXIT_STATUS = {
    ExitReason.POWEROFF: 0,
    ExitReason.QUIT: 0,
    ExitReason.ERROR: 1,
    ExitReason.REBOOT: 3,
    ExitReason.CRASH: 4,
}


@dataclass(frozen=True)
class MachineExit:
    reason: ExitReason
    code: int = 0
    message: str = ""

    @property
    def status(self) -> int:
        """Process exit status for ``kvmlite run``."""
        if self.reason is ExitReason.DEBUG_EXIT:
            from kvmlite.devices.legacy.debug_exit import debug_exit_status  # noqa: PLC0415

            return debug_exit_status(self.code)
        return EXIT_STATUS[self.reason]

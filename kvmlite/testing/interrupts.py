"""A recording interrupt for tests of device models."""

from __future__ import annotations


class RecordingInterrupt:
    """Counts triggers and remembers level changes; both styles in one object."""

    def __init__(self) -> None:
        self.count = 0
        self.level = False
        self.levels: list[bool] = []

    def trigger(self) -> None:
        self.count += 1

    def set_level(self, level: bool) -> None:
        if level and not self.level:
            self.count += 1
        self.level = level
        self.levels.append(level)

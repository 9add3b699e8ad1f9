"""Displays: a linear framebuffer described to the guest by the boot parameters."""

from kvmlite.devices.display.framebuffer import FRAMEBUFFER_GPA, LinearFramebuffer

__all__ = ["FRAMEBUFFER_GPA", "LinearFramebuffer"]

"""kvmlite."""

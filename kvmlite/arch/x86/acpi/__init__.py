"""ACPI tables for kvmlite guests: a small AML encoder and the static tables.

``build_acpi_tables`` (tables.py) is the entry point.
"""

from kvmlite.arch.x86.acpi.tables import AcpiTables, Ecam, build_acpi_tables

__all__ = ["AcpiTables", "Ecam", "build_acpi_tables"]

"""Configuration as data: one frozen, validated dataclass per resource.

Every front-end (the ``kvmlite run`` command line, the REST API, QMP, a
config file, the Python API) only *produces* these objects; the builder
opens their host side (images, taps, character devices) in one place, after
the whole configuration is known to be valid (DESIGN.md, "The machine core";
rule 7). Values are checked in each dataclass's ``__post_init__``; checks
that look at the host's files are in ``check_host()`` methods, which the
builder runs before it opens anything.

``VmConfig.to_json()`` / ``VmConfig.from_json()`` give the JSON form that
snapshots keep beside the machine state.
"""

from kvmlite.config.boot import BootSource
from kvmlite.config.cdrom import CdromConfig
from kvmlite.config.char import CharConfig, CharKind
from kvmlite.config.drive import AioEngine, DriveConfig, DriveInterface, ImageFormat
from kvmlite.config.machine import HostQuirksMode, MachineConfig, Transport
from kvmlite.config.net import NetConfig, NetKind
from kvmlite.config.sizes import MIB, parse_size
from kvmlite.config.vm import DEFAULT_CMDLINE, RngConfig, VirtioConsoleConfig, VmConfig
from kvmlite.config.vnc import VncConfig

__all__ = [
    "DEFAULT_CMDLINE",
    "MIB",
    "BootSource",
    "CharConfig",
    "CharKind",
    "CdromConfig",
    "DriveConfig",
    "DriveInterface",
    "HostQuirksMode",
    "AioEngine",
    "ImageFormat",
    "MachineConfig",
    "NetConfig",
    "NetKind",
    "RngConfig",
    "Transport",
    "VirtioConsoleConfig",
    "VmConfig",
    "VncConfig",
    "parse_size",
]

"""The one exception hierarchy of kvmlite (DESIGN.md, "Style").

Every message tells the user what is wrong and, where it can, what to do.
Guest errors never surface as exceptions out of a device (rule 6); these
classes are for host input (rule 7) and for the VMM's own failures.
"""


class KvmliteError(Exception):
    """Base class: something the user can act on."""


class ConfigError(KvmliteError):
    """A bad command line, configuration value or API request."""


class ImageError(KvmliteError):
    """A kernel, initrd or disk image that cannot be used."""


class KvmError(KvmliteError):
    """/dev/kvm is missing, inaccessible, or refused an operation."""


class GuestMemoryError(KvmliteError):
    """A guest-physical access outside guest RAM."""


class GuestCrash(KvmliteError):
    """The guest stopped in a way the VMM cannot continue from."""


class StateError(KvmliteError):
    """A saved device or machine state that cannot be restored."""

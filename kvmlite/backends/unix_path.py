"""Checks of a unix-domain socket path before binding or connecting (unix(7)).

``sun_path`` holds 108 bytes; QEMU, like most C programs, needs the path
NUL-terminated in it, so a path others can reach has at most 107 bytes.  An
empty path would bind Linux's autobind abstract address, which nobody can
name; a path that exists and is not a socket is not ours to replace.
"""

from __future__ import annotations

import os
import socket
import stat

from kvmlite.errors import ConfigError

#: The longest path QEMU and other C front-ends accept (sizeof(sun_path) - 1).
UNIX_PATH_MAX = 107


def check_unix_path(path: str, what: str) -> None:
    """Refuse an empty or too long socket path, naming ``what`` it is for."""
    if not path:
        raise ConfigError(f"{what}: the socket path is empty; give a file system path")
    if "\0" in path:
        raise ConfigError(f"{what}: the socket path {path!r} contains a NUL byte")
    n = len(os.fsencode(path))
    if n > UNIX_PATH_MAX:
        raise ConfigError(
            f"{what}: the socket path is {n} bytes long; a unix socket path holds at most"
            f" {UNIX_PATH_MAX} (use a shorter path, e.g. in /tmp or a relative one)"
        )


def clear_stale_socket(path: str, what: str) -> None:
    """Remove a socket left at ``path`` by an earlier run; refuse anything else there.

    A socket somebody still listens on, and a path that is not a socket (a
    regular file, a directory), are errors that say so.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(f"{what}: {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a file that is not a socket"
        raise ConfigError(f"{what}: {path} exists and is {kind}; choose another socket path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        probe.connect(path)
    except BlockingIOError:  # a full backlog: somebody listens there
        raise ConfigError(f"{what}: {path} is in use by another program") from None
    except OSError:
        os.unlink(path)  # nobody listens: a stale socket of an earlier run
        return
    finally:
        probe.close()
    raise ConfigError(f"{what}: {path} is in use by another program")

"""VNC Authentication (RFC 6143 §7.2.2) and a throttle against password guessing.

The server sends a random 16-byte challenge; the client encrypts it with DES
(ECB, two blocks) keyed by the password, truncated or zero-padded to 8 bytes.
VNC's quirk, which the RFC does not spell out: every key byte is used with its
bits reversed (the original code took the DES key bits LSB first). DES itself
comes from pycryptodome.

Theory of operation of the throttle: one ``AuthThrottle`` is shared by every
connection of a server. After ``n`` failures in a row the answer to each
wrong password is held back ``min(BASE * 2**(n-1), MAX)`` seconds, and a
password arriving before the last delay ran out is refused unchecked, so
opening many connections does not buy more guesses per second. A success
resets it. Time comes from an injected clock, so tests never sleep.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path

from kvmlite.errors import ConfigError

CHALLENGE_SIZE = 16
#: VNC Authentication uses at most 8 bytes of the password.
MAX_PASSWORD = 8
THROTTLE_BASE_S = 1.0
THROTTLE_MAX_S = 30.0


def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


def vnc_key(password: bytes) -> bytes:
    """The DES key for ``password``: 8 bytes, zero-padded, each byte bit-reversed."""
    return bytes(_reverse_bits(b) for b in password[:MAX_PASSWORD].ljust(MAX_PASSWORD, b"\0"))


def vnc_response(password: bytes, challenge: bytes) -> bytes:
    """What a client sends back for ``challenge`` (also what the server expects)."""
    from Crypto.Cipher import DES  # pycryptodome; only a password-protected server needs it

    return DES.new(vnc_key(password), DES.MODE_ECB).encrypt(challenge)


def check_response(password: bytes, challenge: bytes, response: bytes) -> bool:
    return hmac.compare_digest(vnc_response(password, challenge), response)


def read_password_file(path: Path) -> bytes:
    """The password: the file's first line without its line end (UTF-8, 1..8 bytes used)."""
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the VNC password file {path}: {e.strerror}") from e
    line = text.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        raise ConfigError(f"the VNC password file {path} has an empty first line")
    return line


class AuthThrottle:
    """Rate limit for VNC password checks, shared by a server's connections."""

    def __init__(
        self,
        clock: Callable[[], float],
        base: float = THROTTLE_BASE_S,
        maximum: float = THROTTLE_MAX_S,
    ) -> None:
        self.clock = clock
        self._base = base
        self._max = maximum
        self._failures = 0
        self._locked_until = float("-inf")

    def allowed(self) -> bool:
        """Whether a password may be checked now."""
        return self.clock() >= self._locked_until

    def failure(self) -> float:
        """Record a wrong password; returns the delay before the answer goes out."""
        self._failures += 1
        delay = min(self._base * 2 ** (self._failures - 1), self._max)
        self._locked_until = max(self._locked_until, self.clock() + delay)
        return delay

    def success(self) -> None:
        self._failures = 0

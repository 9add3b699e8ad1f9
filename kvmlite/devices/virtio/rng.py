"""virtio-rng, the entropy device (virtio 1.2 §5.4).

One queue (requestq) of writable buffers; the device fills each with random
bytes from ``entropy`` (``os.urandom`` by default). An optional rate limit
(bytes per second, token bucket holding at most one second's worth) keeps a
guest from draining the host's entropy pool or spinning a host CPU: when the
bucket is empty the chain stays in the ring and, if the VMM gave a
``timer(delay, callback)``, the queue is processed again once tokens refill;
otherwise on the next kick.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from kvmlite.devices.persist import Persist
from kvmlite.devices.virtio.device import VirtioDevice, VirtioDeviceState
from kvmlite.devices.virtio.spec import VIRTIO_ID_RNG
from kvmlite.errors import ConfigError

#: Largest single fill, so one huge buffer cannot make us allocate gigabytes.
MAX_FILL = 64 * 1024


class TokenBucket:
    """``rate`` tokens per second, at most ``burst``; the clock is injectable."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, wanted: int) -> int:
        """Take up to ``wanted`` whole tokens; returns how many were taken."""
        self._refill()
        n = min(wanted, int(self.tokens))
        self.tokens -= n
        return n

    def delay_for(self, n: int) -> float:
        """Seconds until ``n`` tokens are available."""
        self._refill()
        return max(0.0, (n - self.tokens) / self.rate)


@dataclass(frozen=True)
class VirtioRngState:
    device: VirtioDeviceState


class VirtioRng(VirtioDevice, Persist[VirtioRngState]):
    """Entropy source device."""

    device_type = VIRTIO_ID_RNG

    def __init__(
        self,
        *,
        entropy: Callable[[int], bytes] = os.urandom,
        rate_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[float, Callable[[], None]], None] | None = None,
        queue_size: int = 64,
        name: str = "virtio-rng",
    ) -> None:
        if rate_limit is not None and rate_limit <= 0:
            raise ConfigError(f"{name}: rate limit {rate_limit} must be a positive bytes/s")
        super().__init__(name=name, queue_sizes=[queue_size])
        self.entropy = entropy
        self.bucket = TokenBucket(rate_limit, rate_limit, clock) if rate_limit else None
        self.timer = timer
        self._timer_armed = False

    def handle_queue(self, index: int) -> None:
        q = self.queues[0]
        mem = self.memory
        assert mem is not None
        while True:
            q.disable_notification(mem)
            while (chain := q.pop(mem)) is not None:
                want = min(chain.writable_len, MAX_FILL)
                n = want
                if self.bucket is not None and want:
                    n = self.bucket.take(want)
                    if n == 0:
                        q.go_back()  # keep the buffer for when tokens refill
                        q.enable_notification(mem)
                        self._arm_timer(want)
                        return
                written = chain.write_all(mem, self.entropy(n)) if n else 0
                q.add_used(mem, chain.head, written)
                self.signal_queue(0)
            if not q.enable_notification(mem):
                break

    def _arm_timer(self, want: int) -> None:
        if self.timer is None or self._timer_armed or self.bucket is None:
            return
        self._timer_armed = True
        delay = self.bucket.delay_for(min(want, int(self.bucket.burst)))

        def fire() -> None:
            self._timer_armed = False
            self.process_queue(0)

        self.timer(delay, fire)

    def save(self) -> VirtioRngState:
        with self.lock:
            return VirtioRngState(self.save_base())

    def load_state(self, state: VirtioRngState) -> None:
        with self.lock:
            self.restore_base(state.device)

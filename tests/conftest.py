"""Suite-wide settings.

Hypothesis: no per-example deadline and no "too slow" health check. The
suite runs on 2-core machines whose KVM is emulated and which may be busy;
a fuzz example that takes 300 ms there is not a bug, and a timing-based
failure would make CI flaky. Fuzz tests still fail on wrong behaviour.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("kvmlite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("kvmlite")

"""Suite-wide settings.

Hypothesis: no per-example deadline and no "too slow" health check. The
suite runs on 2-core machines whose KVM is emulated and which may be busy;
a fuzz example that takes 300 ms there is not a bug, and a timing-based
failure would make CI flaky. Fuzz tests still fail on wrong behaviour.

``make fuzz`` (a longer campaign): every hypothesis test gets the marker
``fuzz``; ``HYPOTHESIS_PROFILE=fuzz`` raises the default number of examples,
and ``KVMLITE_FUZZ_SCALE=N`` multiplies the ``max_examples`` a test sets
itself (those override any profile), so one knob scales every target.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("kvmlite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", settings.get_profile("kvmlite"), max_examples=2000, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "kvmlite"))
FUZZ_SCALE = int(os.environ.get("KVMLITE_FUZZ_SCALE", "1"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    scaled: set[int] = set()
    for item in items:
        fn = getattr(item, "obj", None)
        if getattr(fn, "hypothesis", None) is None:  # not a @given test
            continue
        item.add_marker(pytest.mark.fuzz)
        own = getattr(fn, "_hypothesis_internal_use_settings", None)
        if FUZZ_SCALE > 1 and own is not None and id(fn) not in scaled:
            scaled.add(id(fn))  # parametrized items share the function: scale it once
            fn._hypothesis_internal_use_settings = settings(  # type: ignore[union-attr]
                own, max_examples=own.max_examples * FUZZ_SCALE
            )

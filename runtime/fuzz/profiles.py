"""Runtime fuzz layer: hypothesis profiles (`ci` short, derandomized; `long` for `ttgen fuzz`) and budgets."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis.errors import InvalidArgument

SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# Per-example cost relative to a pure round-trip: live and stateful examples do socket round-trips.
SUITE_SHARE = {"roundtrip": 0.15, "frames": 0.15, "live": 0.1, "stateful": 0.25}


def ensure_profiles() -> None:
    """Register the project's `ci` and `long` profiles (as tests/conftest.py does) and load
    `$HYPOTHESIS_PROFILE` (default ci). Other profiles a conftest registered are left alone."""
    settings.register_profile(
        "ci",
        max_examples=40,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=SUPPRESSED,
    )
    settings.register_profile("long", max_examples=5000, deadline=None, suppress_health_check=SUPPRESSED)
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    try:
        settings.load_profile(name)
    except InvalidArgument:
        settings.load_profile("ci")


def suite_settings(suite: str, **overrides: object) -> settings:
    """Settings for one generated suite: the current profile, with fewer examples for costly suites."""
    base = settings()
    examples = max(3, int(base.max_examples * SUITE_SHARE.get(suite, 1.0)))
    opts: dict[str, object] = {
        "max_examples": examples,
        "deadline": None,
        "suppress_health_check": list(set(base.suppress_health_check) | set(SUPPRESSED)),
    }
    if suite == "stateful":
        opts["stateful_step_count"] = 12
    opts.update(overrides)
    return settings(base, **opts)  # type: ignore[arg-type]

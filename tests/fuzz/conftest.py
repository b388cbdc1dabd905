"""Fixtures of the fuzz-machinery tests: the bundled stack as a `FuzzStack`."""

from __future__ import annotations

import pytest

from generated.teamtalk import registry, servers, strategies
from runtime.fuzz.stack import FuzzStack


@pytest.fixture(scope="session")
def tt_stack() -> FuzzStack:
    return FuzzStack.from_modules(registry, servers, strategies)

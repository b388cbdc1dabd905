"""The storage layer's enums repeat values of the spec's enums (storage imports neither the generated code nor
the services: tests/unit/test_layering.py). This pins them to the spec (spec/teamtalk), so a spec edit that
renumbers or adds a value fails here instead of in production."""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path

import pytest

from codegen.api import check_spec
from runtime.storage import models

SPEC = Path(__file__).resolve().parents[3] / "spec" / "teamtalk"


@pytest.fixture(scope="module")
def spec_enums() -> dict[str, dict[str, int]]:
    spec, _ = check_spec(SPEC)
    return {name: {v.name: v.value for v in e.values} for name, e in spec.enums().items()}


@pytest.mark.parametrize(
    ("storage_enum", "spec_enum", "prefix"),
    [
        (models.SessionType, "IM.BaseDefine.SessionType", "SESSION_TYPE_"),
        (models.GroupType, "IM.BaseDefine.GroupType", "GROUP_TYPE_"),
        (models.GroupModify, "IM.BaseDefine.GroupModifyType", "GROUP_MODIFY_TYPE_"),
    ],
)
def test_storage_enum_has_exactly_the_spec_values(
    storage_enum: type[IntEnum], spec_enum: str, prefix: str, spec_enums: dict[str, dict[str, int]]
) -> None:
    expected = {name.removeprefix(prefix): value for name, value in spec_enums[spec_enum].items()}
    assert {m.name: m.value for m in storage_enum} == expected

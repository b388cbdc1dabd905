"""Unit: the `md5_login` policy key (runtime.auth.passwords.md5_login_policy) and its check at biz start."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.auth import PolicyError, md5_login_policy
from runtime.services.biz.validate import Validator


def cluster(value: Any) -> dict[str, Any]:
    return {"services": {"biz": {"instances": 1, "auth": {"md5_login": value}}}}


def test_the_policy_defaults_to_allow_and_reads_the_biz_auth_section() -> None:
    assert md5_login_policy({}) == "allow"
    assert md5_login_policy({"services": {"biz": {"instances": 1}}}) == "allow"
    for value in ("allow", "secure_only", "refuse"):
        assert md5_login_policy(cluster(value)) == value


@pytest.mark.parametrize("bad", ["sometimes", "", True, 1, None, ["refuse"]])
def test_a_bad_policy_is_refused_with_the_choices(bad: Any) -> None:
    with pytest.raises(PolicyError, match="md5_login must be one of allow, secure_only, refuse"):
        md5_login_policy(cluster(bad))
    with pytest.raises(PolicyError, match="md5_login must be one of allow, secure_only, refuse"):
        Validator(None, {"md5_login": bad})  # type: ignore[arg-type]  # refused before storage is touched

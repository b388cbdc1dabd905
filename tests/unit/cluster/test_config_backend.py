"""Config layer: an unknown or incomplete storage backend is refused when the config is read, naming the
key."""

from __future__ import annotations

import pytest

from runtime.cluster.config import ConfigError, parse_config


def test_unknown_backend_is_refused_at_config_time() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"storage": {"backend": "mysql"}})
    assert info.value.key == "storage.backend"
    assert "mysql" in str(info.value) and "postgres" in str(info.value)  # the choices are named


def test_postgres_without_a_dsn_is_refused_at_config_time() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"storage": {"backend": "postgres"}})
    assert info.value.key == "storage.dsn"
    assert "postgresql://" in str(info.value)


def test_sqlite_backend_is_accepted() -> None:
    cfg = parse_config({"storage": {"backend": "sqlite"}})
    assert cfg.storage["backend"] == "sqlite"

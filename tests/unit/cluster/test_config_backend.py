"""Config layer: an unavailable storage backend is refused when the config is read, naming the key."""

from __future__ import annotations

import pytest

from runtime.cluster.config import ConfigError, parse_config


def test_unshipped_backend_is_refused_at_config_time() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"storage": {"backend": "postgres"}})
    assert "storage.backend" in str(info.value)
    assert "postgres" in str(info.value)


def test_sqlite_backend_is_accepted() -> None:
    cfg = parse_config({"storage": {"backend": "sqlite"}})
    assert cfg.storage["backend"] == "sqlite"

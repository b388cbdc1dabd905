"""Cluster config: defaults, overrides, and validation errors that name the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runtime.cluster.config import (
    ConfigError,
    ServiceConfig,
    load_config,
    parse_config,
    resolve_preferred_ports,
)


def test_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.data_dir == tmp_path / "ttgen-data"
    assert config.host == "127.0.0.1"
    assert config.spec == "teamtalk"
    assert config.storage["backend"] == "sqlite"
    assert config.storage_dir == config.data_dir
    counts = {name: s.instances for name, s in config.services.items()}
    # Two of every service without state of its own; one biz on SQLite (one writer); one blob store.
    assert counts == {"login": 2, "msg": 2, "router": 2, "biz": 1, "file": 2, "storage": 1, "gateway": 2}
    assert config.restart == "on-failure"
    assert [s.name for s in config.ordered_services()][:4] == ["storage", "biz", "router", "login"]
    assert config.services["login"].options["http_port"] == "preferred:8080"


def test_file_and_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "ttgen.yaml"
    cfg.write_text(
        "data_dir: data\nservices:\n  msg: {instances: 3, client_port: 9000}\n  router: {instances: 1}\n"
    )
    config = load_config(cfg, {"services.msg.instances": 4, "host": "127.0.0.2"})
    assert config.data_dir == tmp_path / "data"  # relative to the file's folder
    assert config.services["msg"].instances == 4
    assert config.services["msg"].options["max_conn"] == 100000  # default kept beside the override
    assert config.services["router"].instances == 1
    assert config.host == "127.0.0.2"


def test_override_data_dir_is_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, {"data_dir": "elsewhere"})
    assert config.data_dir == tmp_path / "elsewhere"


def test_fixed_ports_are_offset_per_instance() -> None:
    svc = ServiceConfig("msg", 3, "m:C", {"client_port": 9000, "internal_port": 0, "max_conn": 5})
    assert [svc.instance_options(i)["client_port"] for i in range(3)] == [9000, 9001, 9002]
    assert svc.instance_options(2)["internal_port"] == 0
    assert svc.instance_options(2)["max_conn"] == 5


def test_preferred_port_falls_back_to_any_when_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = parse_config(
            {
                "data_dir": str(tmp_path),
                "services": {"login": {"instances": 1, "http_port": f"preferred:{port}"}},
            }
        )
        assert resolve_preferred_ports(config).services["login"].options["http_port"] == 0
    assert resolve_preferred_ports(config).services["login"].options["http_port"] == port


def test_preferred_port_needs_every_instance_port_free(tmp_path: Path) -> None:
    """Instance i listens on the preferred port + i: when the second one is taken, any free ports instead."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1] - 1
        raw = {"data_dir": str(tmp_path), "services": {"login": {"http_port": f"preferred:{port}"}}}
        config = parse_config(raw)
        assert config.services["login"].instances == 2
        assert resolve_preferred_ports(config).services["login"].options["http_port"] == 0


def test_biz_instances_default_per_backend(tmp_path: Path) -> None:
    """One biz on SQLite (one writer), two on PostgreSQL; an explicit count wins either way."""
    pg = {"backend": "postgres", "dsn": "postgresql://ttgen@db:5432/ttgen"}
    assert parse_config({"data_dir": str(tmp_path)}).services["biz"].instances == 1
    assert parse_config({"data_dir": str(tmp_path), "storage": pg}).services["biz"].instances == 2
    auth = {"time_cost": 1}
    kept = parse_config({"data_dir": str(tmp_path), "storage": pg, "services": {"biz": {"auth": auth}}})
    assert kept.services["biz"].instances == 2 and kept.services["biz"].options["auth"] == auth
    one = parse_config({"data_dir": str(tmp_path), "storage": pg, "services": {"biz": {"instances": 1}}})
    assert one.services["biz"].instances == 1
    with pytest.raises(ConfigError, match=r"services\.biz"):
        parse_config({"data_dir": str(tmp_path), "services": {"biz": [1]}})


def test_round_trip_through_json(tmp_path: Path) -> None:
    import json

    config = parse_config({"data_dir": str(tmp_path), "services": {"msg": {"instances": 1}}})
    again = parse_config(json.loads(config.to_json()))
    assert again.as_dict() == config.as_dict()


PG = {"backend": "postgres", "dsn": "postgresql://db/x"}


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"services": {"msg": {"instances": -1}}}, "services.msg.instances"),
        ({"services": {"msg": {"instances": "two"}}}, "services.msg.instances"),
        ({"services": {"msg": {"instances": True}}}, "services.msg.instances"),
        ({"services": {"msg": {"client_port": 70000}}}, "services.msg.client_port"),
        ({"services": {"login": {"http_port": "8080"}}}, "services.login.http_port"),
        ({"services": {"nosuch": {}}}, "services.nosuch"),
        ({"services": {"x": {"class": "not a ref"}}}, "services.x.class"),
        ({"services": {"msg": 3}}, "services.msg"),
        ({"services": []}, "services"),
        ({"storage": {"backend": "mysql"}}, "storage.backend"),
        ({"storage": {"path": "x.db"}}, "storage.path"),
        ({"storage": {"path": "ttgen.db", "dir": "a"}}, "storage.path"),
        ({"storage": {"dir": ""}}, "storage.dir"),
        ({"storage": {"encrypt_at_rest": "yes"}}, "storage.encrypt_at_rest"),
        ({"storage": {"backend": "postgres"}}, "storage.dsn"),
        ({"storage": {"backend": "postgres", "dsn": "host=db dbname=x"}}, "storage.dsn"),
        ({"storage": {"backend": "postgres", "dsn": 5}}, "storage.dsn"),
        (
            {"storage": {"backend": "postgres", "dsn": "postgresql://db/x", "path": "ttgen.db"}},
            "storage.path",
        ),
        (
            {"storage": {"backend": "postgres", "dsn": "postgresql://db/x", "cluster_id": " "}},
            "storage.cluster_id",
        ),
        ({"storage": {"dsn": "postgresql://db/x"}}, "storage.dsn"),
        ({"discovery": {"backend": "etcd"}}, "discovery.backend"),
        ({"discovery": {"backend": "database"}}, "discovery.backend"),  # needs storage.backend postgres
        ({"storage": PG, "discovery": {"backend": "database", "ttl": 0}}, "discovery.ttl"),
        ({"storage": PG, "discovery": {"backend": "database", "poll": "1s"}}, "discovery.poll"),
        ({"discovery": {"lease": 3}}, "discovery.lease"),
        ({"discovery": "database"}, "discovery"),
        ({"data_dir": ""}, "data_dir"),
        ({"host": 5}, "host"),
        ({"spec": "no-such spec"}, "spec"),
        ({"plugins": "shake"}, "plugins"),
        ({"drain_timeout": 0}, "drain_timeout"),
        ({"endpoints": [{"service": "router", "kind": "internal", "host": "h"}]}, "endpoints[0].port"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_errors_name_the_key(doc: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("services:\n  msg: {instances: [1]}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert str(info.value).startswith(f"{cfg}: services.msg.instances: ")
    cfg.write_text("services: {msg: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert info.value.key == "(yaml)"
    assert "line " in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert info.value.key == "(file)"


def test_custom_service_class_and_disabled_services(tmp_path: Path) -> None:
    config = parse_config(
        {
            "data_dir": str(tmp_path),
            "services": {
                "msg": {"instances": 0},
                "probe": {"instances": 2, "class": "runtime.cluster.probe:ProbeService"},
            },
        }
    )
    names = [s.name for s in config.ordered_services()]
    assert "msg" not in names
    assert names[-1] == "probe"  # services outside the table start last


def test_storage_folder(tmp_path: Path) -> None:
    assert parse_config({"data_dir": str(tmp_path)}).storage_dir == tmp_path
    as_in_cluster_md = parse_config({"data_dir": str(tmp_path), "storage": {"path": "ttgen.db"}})
    assert as_in_cluster_md.storage_dir == tmp_path
    assert parse_config({"data_dir": str(tmp_path), "storage": {"dir": "db"}}).storage_dir == tmp_path / "db"
    assert parse_config({"data_dir": str(tmp_path), "storage": {"dir": "/abs"}}).storage_dir == Path("/abs")


def test_the_example_of_cluster_md_parses(tmp_path: Path) -> None:
    doc = yaml.safe_load(
        """
data_dir: ./ttgen-data
host: 127.0.0.1
spec: teamtalk
storage: {backend: sqlite, path: ttgen.db, encrypt_at_rest: true}
services:
  login:   {instances: 1, http_port: 8080, client_port: 8008, internal_port: 8100}
  msg:     {instances: 2, client_port: 0, max_conn: 100000}
  router:  {instances: 2}
  biz:     {instances: 1}
  file:    {instances: 1}
  storage: {instances: 1}
  gateway: {instances: 1, http_port: 8400, admin_api_key_file: admin.key}
plugins: [shake]
"""
    )
    config = parse_config(doc, base_dir=tmp_path)
    assert config.storage_dir == tmp_path / "ttgen-data"
    assert config.services["gateway"].options["admin_api_key_file"] == "admin.key"
    assert config.plugins == ("shake",)


def test_internal_host_and_secret_file(tmp_path: Path) -> None:
    config = parse_config({"data_dir": str(tmp_path), "host": "0.0.0.0"})
    assert (config.host, config.internal_host) == ("0.0.0.0", "127.0.0.1")  # links never follow `host`
    assert config.secret_path == tmp_path / "cluster.key"
    moved = parse_config(
        {"data_dir": str(tmp_path), "internal_host": "10.1.2.3", "secret_file": "/etc/tt.key"}
    )
    assert (moved.internal_host, moved.secret_path) == ("10.1.2.3", Path("/etc/tt.key"))
    assert parse_config(moved.as_dict()).secret_path == Path("/etc/tt.key")
    for key, bad in (("internal_host", ""), ("secret_file", 7)):
        with pytest.raises(ConfigError) as err:
            parse_config({key: bad})
        assert err.value.key == key


def test_postgres_storage_is_accepted_and_opens_the_postgres_backend(tmp_path: Path) -> None:
    from runtime.services.biz.storage_open import storage_from_config
    from runtime.storage.postgres import PostgresStorage

    doc = {
        "data_dir": str(tmp_path),
        "storage": {"backend": "postgres", "dsn": "postgresql://u@db:5432/ttgen"},
    }
    config = parse_config(doc)
    assert config.storage["backend"] == "postgres" and config.storage["dsn"] == "postgresql://u@db:5432/ttgen"
    assert parse_config(config.as_dict()) == config
    store = storage_from_config({**config.storage, "readers": 3, "cluster_id": "c1"}, config.storage_dir)
    assert isinstance(store, PostgresStorage) and store.dsn == "postgresql://u@db:5432/ttgen"
    assert store.data_dir == tmp_path  # where storage.key and cluster.id live


def test_database_discovery_is_accepted_with_postgres(tmp_path: Path) -> None:
    doc = {
        "data_dir": str(tmp_path),
        "storage": PG,
        "discovery": {"backend": "database", "ttl": 6, "poll": 0.5},
    }
    config = parse_config(doc)
    assert dict(config.discovery) == {"backend": "database", "ttl": 6.0, "poll": 0.5}
    assert parse_config(config.as_dict()) == config
    assert parse_config({"data_dir": str(tmp_path)}).discovery == {"backend": "run_dir"}  # the default

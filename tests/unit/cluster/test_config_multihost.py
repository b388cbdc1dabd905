"""Config of a host that runs part of a cluster: `only`, `join`, advertised addresses, instance numbers,
and the clear errors for combinations that cannot work across hosts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runtime.cluster.config import (
    ConfigError,
    missing_shared_files,
    parse_config,
    shared_files,
)
from runtime.services.base import ServiceContext
from ttgen.commands.up import up

DSN = "postgresql://ttgen@10.20.0.1:5432/ttgen"


def spanning(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path),
        "host": "10.20.0.2",
        "internal_host": "10.20.0.2",
        "storage": {"backend": "postgres", "dsn": DSN},
        "discovery": {"backend": "database"},
        **extra,
    }


def error_of(doc: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    return info.value


def test_only_selects_services_in_start_order(tmp_path: Path) -> None:
    config = parse_config(spanning(tmp_path, only=["msg", "router"]))
    assert [s.name for s in config.ordered_services()] == ["router", "msg"]
    assert config.spans_hosts
    assert parse_config(spanning(tmp_path, only="msg, router")).only == ("msg", "router")
    assert parse_config(config.as_dict()) == config  # survives the trip to a worker process


def test_only_names_unknown_and_disabled_services(tmp_path: Path) -> None:
    exc = error_of(spanning(tmp_path, only=["msg", "chat"]))
    assert exc.key == "only" and "unknown service 'chat'" in str(exc) and "router" in str(exc)
    doc = spanning(tmp_path, only=["file"], services={"file": {"instances": 0}})
    assert "instances: 0" in str(error_of(doc))
    assert "names no service" in str(error_of(spanning(tmp_path, only=[])))


def test_parts_of_a_cluster_need_postgres(tmp_path: Path) -> None:
    doc = spanning(tmp_path, only=["msg"])
    doc["storage"] = {"backend": "sqlite"}
    doc.pop("discovery")
    exc = error_of(doc)
    assert exc.key == "only" and "SQLite database lives on one host" in str(exc)


def test_parts_of_a_cluster_need_discovery_across_hosts(tmp_path: Path) -> None:
    doc = spanning(tmp_path, only=["msg"])
    doc["discovery"] = {"backend": "run_dir"}
    exc = error_of(doc)
    assert exc.key == "discovery.backend" and "this host only" in str(exc)
    # a static list of the other hosts' endpoints is discovery across hosts too
    doc["endpoints"] = [{"service": "router", "kind": "internal", "host": "10.20.0.3", "port": 7000}]
    assert parse_config(doc).only == ("msg",)


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("host", "127.0.0.1", "host"),
        ("internal_host", "localhost", "internal_host"),
        ("host", "0.0.0.0", "advertise_host"),
        ("internal_host", "::", "internal_advertise_host"),
    ],
)
def test_parts_of_a_cluster_advertise_routable_addresses(
    tmp_path: Path, key: str, value: str, named: str
) -> None:
    exc = error_of(spanning(tmp_path, only=["msg"], **{key: value}))
    assert exc.key == named


def test_wildcard_bind_with_an_advertised_address(tmp_path: Path) -> None:
    config = parse_config(
        spanning(
            tmp_path, only=["msg"], host="0.0.0.0", advertise_host="10.20.0.2", internal_host="10.20.0.2"
        )
    )
    assert (config.host, config.advertised_host) == ("0.0.0.0", "10.20.0.2")
    ctx = ServiceContext(
        "msg",
        0,
        None,
        {},
        {},
        tmp_path,
        None,  # type: ignore[arg-type]
        host="0.0.0.0",
        internal_host="0.0.0.0",
        advertise_host="10.20.0.2",
        internal_advertise_host="10.9.9.9",
    )
    assert ctx.advertised("client") == "10.20.0.2" and ctx.advertised("internal") == "10.9.9.9"
    assert "other hosts can connect" in str(error_of(spanning(tmp_path, advertise_host="0.0.0.0")))


def test_join_is_postgres_storage_and_database_discovery(tmp_path: Path) -> None:
    doc = spanning(tmp_path, join=DSN)
    doc.pop("storage")
    doc.pop("discovery")
    config = parse_config(doc)
    assert config.storage["backend"] == "postgres" and config.storage["dsn"] == DSN
    assert config.discovery["backend"] == "database"
    assert config.spans_hosts
    assert "URL" in str(error_of({**doc, "join": "10.20.0.1:5432"}))
    assert "storage.backend is 'sqlite'" in str(error_of({**doc, "storage": {"backend": "sqlite"}}))
    other = {"backend": "postgres", "dsn": "postgresql://x@10.20.0.9/other"}
    assert "different databases" in str(error_of({**doc, "storage": other}))
    exc = error_of({**doc, "discovery": {"backend": "run_dir"}})
    assert exc.key == "discovery.backend"


def test_first_instance_numbers_this_hosts_instances(tmp_path: Path) -> None:
    config = parse_config(spanning(tmp_path, services={"msg": {"instances": 2, "first_instance": 2}}))
    assert list(config.services["msg"].numbers) == [2, 3]
    assert parse_config(config.as_dict()).services["msg"].numbers == range(2, 4)
    exc = error_of(spanning(tmp_path, services={"msg": {"first_instance": -1}}))
    assert exc.key == "services.msg.first_instance"


def test_a_joining_host_needs_the_shared_files(tmp_path: Path) -> None:
    config = parse_config(
        {"data_dir": str(tmp_path), "host": "10.20.0.2", "internal_host": "10.20.0.2", "join": DSN}
    )
    names = {path.name for path, _ in missing_shared_files(config)}
    assert names == {"cluster.key", "cluster.id", "storage.key", "ticket.key"}
    for path, _ in shared_files(config):
        path.write_bytes(b"x")
    assert missing_shared_files(config) == []
    alone = parse_config({"data_dir": str(tmp_path / "other")})
    assert missing_shared_files(alone) == []  # the first host makes them


def test_cli_refuses_bad_combinations_before_starting(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--data-dir", str(tmp_path), "--host", "10.20.0.2", "--internal-host", "10.20.0.2"]
    out = runner.invoke(up, [*args, "--only", "msg,chat"])
    assert out.exit_code != 0 and "unknown service 'chat'" in out.output
    out = runner.invoke(up, [*args, "--only", "msg"])
    assert out.exit_code != 0 and "SQLite database lives on one host" in out.output
    out = runner.invoke(up, [*args, "--join", DSN, "--only", "msg"])
    assert out.exit_code != 0 and "cluster.key" in out.output and "cluster.id" in out.output
    assert not (tmp_path / "cluster.key").exists()  # nothing made: a fresh key would split the cluster
    out = runner.invoke(up, ["--data-dir", str(tmp_path), "--join", DSN, "--only", "msg"])
    assert out.exit_code != 0 and "loopback" in out.output

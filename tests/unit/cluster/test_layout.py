"""Unit: deployment layouts: which roles share a process, in which order the processes start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.cluster.config import ConfigError, parse_config
from runtime.cluster.layout import DEFAULT_LAYOUT, process_groups, shard_of
from runtime.cluster.processes import start_batches


def config(tmp_path: Path, layout: str | None, **instances: int) -> Any:
    counts = {"login": 1, "msg": 2, "router": 2, "biz": 1, "file": 0, "storage": 0, "gateway": 0, **instances}
    doc: dict[str, Any] = {
        "data_dir": str(tmp_path),
        "services": {name: {"instances": n} for name, n in counts.items()},
    }
    if layout is not None:
        doc["layout"] = layout
    return parse_config(doc)


def test_split_is_one_process_per_instance_in_table_order(tmp_path: Path) -> None:
    groups = process_groups(config(tmp_path, "split"))
    assert [g.name for g in groups] == ["biz-0", "router-0", "router-1", "login-0", "msg-0", "msg-1"]
    assert all(g.shard is None and len(g.members) == 1 for g in groups)
    assert shard_of(config(tmp_path, "split"), "msg", 0) is None


def test_sharded_groups_msg_biz_and_router_of_one_instance_number(tmp_path: Path) -> None:
    cfg = config(tmp_path, "sharded", router=3, biz=1, gateway=1)
    groups = process_groups(cfg)
    assert [(g.name, g.members) for g in groups] == [
        ("router-2", (("router", 2),)),  # beyond the msg count: a process of its own, before the shards
        ("login-0", (("login", 0),)),
        ("shard-0", (("biz", 0), ("router", 0), ("msg", 0))),  # biz and router start before msg
        ("shard-1", (("router", 1), ("msg", 1))),
        ("gateway-0", (("gateway", 0),)),
    ]
    assert shard_of(cfg, "biz", 0) == "shard-0" and shard_of(cfg, "router", 1) == "shard-1"
    assert shard_of(cfg, "router", 2) is None and shard_of(cfg, "login", 0) is None
    every = sorted(m for g in groups for m in g.members)
    assert every == sorted({(s.name, i) for s in cfg.ordered_services() for i in range(s.instances)})


def test_start_batches_keep_instances_of_a_service_together_and_shards_apart(tmp_path: Path) -> None:
    split = start_batches(config(tmp_path, "split"), {"login", "msg", "router", "biz"})
    assert [[g.name for g in b] for b in split] == [
        ["biz-0"],
        ["router-0", "router-1"],
        ["login-0"],
        ["msg-0", "msg-1"],
    ]
    sharded = start_batches(config(tmp_path, "sharded"), {"login", "msg", "router", "biz"})
    assert [[g.name for g in b] for b in sharded] == [["login-0"], ["shard-0"], ["shard-1"]]
    # a role whose module is missing is left out of its shard, not the shard
    partial = start_batches(config(tmp_path, "sharded"), {"login", "msg", "router"})
    assert [g.members for b in partial for g in b if g.shard == "shard-0"] == [(("router", 0), ("msg", 0))]


def test_layout_defaults_to_the_measured_faster_one_and_refuses_unknown_values(tmp_path: Path) -> None:
    assert config(tmp_path, None).layout == DEFAULT_LAYOUT == "split"
    assert parse_config(config(tmp_path, "split").as_dict()).layout == "split"
    with pytest.raises(ConfigError, match="layout"):
        config(tmp_path, "one-big-process")

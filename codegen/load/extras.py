"""Codegen load layer: build cluster services and stage policies, and merge plugin additions into them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from codegen.diagnostics import did_you_mean
from codegen.load.modules import plain
from codegen.load.reader import Reader
from codegen.load.yamlpos import Y
from codegen.model import STAGES, ClusterService, Loc, StagePolicy

CLUSTER_KEYS = ("services",)
SERVICE_KEYS = ("role", "doc", "listen", "default_port", "hosts", "links")
LISTEN = ("", "tcp", "http", "tcp+http")


def build_cluster(r: Reader, y: Y, plugin: str | None) -> list[ClusterService]:
    """Cluster services from a `{services: {...}}` mapping (a file, inline, or a plugin's `cluster:`)."""
    m = r.mapping(y, "cluster", CLUSTER_KEYS, required=("services",))
    if m is None or "services" not in m:
        return []
    services_y = m["services"]
    out: list[ClusterService] = []
    for name, sy in r.entries(services_y, "cluster services", "TT512", "cluster service").items():
        sm = r.mapping(sy, f"cluster service '{name}'", SERVICE_KEYS)
        if sm is None:
            continue
        locs = {k: v.loc for k, v in sm.items()}
        hosts = r.str_list(sm.get("hosts"), f"cluster service '{name}' hosts")
        links = r.str_list(sm.get("links"), f"cluster service '{name}' links")
        for cmd, loc in hosts:
            locs.setdefault(f"hosts:{cmd}", loc)
        for link, loc in links:
            locs.setdefault(f"links:{link}", loc)
        listen = (
            r.choice(sm.get("listen"), f"cluster service '{name}' listen", LISTEN) if "listen" in sm else ""
        )
        out.append(
            ClusterService(
                name=name,
                role=r.string(sm.get("role"), "role") or name,
                loc=services_y.keys[name],
                doc=r.string(sm.get("doc"), "doc") or "",
                hosts=tuple(dict.fromkeys(c for c, _ in hosts)),
                links=tuple(dict.fromkeys(s for s, _ in links)),
                listen=listen or "",
                default_port=r.integer(sm.get("default_port"), "default_port"),
                plugin=plugin,
                key_locs=locs,
            )
        )
    return out


def merge_cluster(base: list[ClusterService], extra: list[ClusterService]) -> list[ClusterService]:
    """Add a plugin's services: new names are appended, existing ones get the plugin's hosts and links."""
    index = {s.name: i for i, s in enumerate(base)}
    out = list(base)
    for svc in extra:
        if svc.name not in index:
            index[svc.name] = len(out)
            out.append(svc)
            continue
        old = out[index[svc.name]]
        locs = dict(old.key_locs)
        for key, loc in svc.key_locs.items():
            if key.startswith(("hosts:", "links:")):
                locs.setdefault(key, loc)
        out[index[svc.name]] = dataclasses.replace(
            old,
            hosts=tuple(dict.fromkeys(old.hosts + svc.hosts)),
            links=tuple(dict.fromkeys(old.links + svc.links)),
            key_locs=locs,
        )
    return out


def build_policy(
    r: Reader, target: str, y: Y, target_loc: Loc, resolve: Callable[[str], str]
) -> StagePolicy | None:
    """One stage policy. Unknown stage names are reported here (TT602); keys and values by the validator.

    `key_locs` holds `<stage>` (the stage key), `<stage>.<key>` (the value) and `<stage>.<key>:key` (the key).
    """
    m = r.entries(y, f"stage policy '{target}'", "TT104", "stage")
    stages: dict[str, dict[str, object]] = {}
    locs: dict[str, Loc] = {}
    for stage, sy in m.items():
        if stage not in STAGES:
            hint = did_you_mean(stage, STAGES)
            r.diags.error(
                "TT602", f"unknown stage '{stage}'{hint}", y.keys[stage], hint="stages: " + ", ".join(STAGES)
            )
            continue
        locs[stage] = y.keys[stage]
        if sy.value is None and sy.kind == "scalar":
            stages[stage] = {}
            continue
        entries = r.entries(sy, f"stage '{stage}' of '{target}'", "TT104", "policy key")
        values: dict[str, object] = {}
        for key, vy in entries.items():
            values[key] = plain(vy)
            locs[f"{stage}.{key}"] = vy.loc
            locs[f"{stage}.{key}:key"] = sy.keys[key]
        stages[stage] = values
    return StagePolicy(
        target=resolve(target),
        loc=target_loc,
        input=stages.get("input", {}),
        pack=stages.get("pack", {}),
        transport=stages.get("transport", {}),
        unpack=stages.get("unpack", {}),
        store=stages.get("store", {}),
        present=stages.get("present", {}),
        key_locs=locs,
    )

"""Codegen load layer: build cluster services and stage policies, and merge plugin additions into them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from codegen.diagnostics import did_you_mean
from codegen.load.modules import plain
from codegen.load.reader import Reader
from codegen.load.yamlpos import Y
from codegen.model import (
    PRESENCE_AUDIENCES,
    PRESENCE_CLIENTS,
    STAGES,
    ClusterService,
    Loc,
    PresencePolicy,
    StagePolicy,
)

CLUSTER_KEYS = ("services",)
SERVICE_KEYS = ("role", "doc", "listen", "default_port", "hosts", "receives", "links")
LISTEN = ("", "tcp", "http", "tcp+http")
PRESENCE_KEYS = (
    "doc", "audience", "clients", "coalesce", "notify", "batch", "batch_from", "online", "offline",
)


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
        receives = r.str_list(sm.get("receives"), f"cluster service '{name}' receives")
        links = r.str_list(sm.get("links"), f"cluster service '{name}' links")
        for cmd, loc in hosts:
            locs.setdefault(f"hosts:{cmd}", loc)
        for cmd, loc in receives:
            locs.setdefault(f"receives:{cmd}", loc)
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
                receives=tuple(dict.fromkeys(c for c, _ in receives)),
                links=tuple(dict.fromkeys(s for s, _ in links)),
                listen=listen or "",
                default_port=r.integer(sm.get("default_port"), "default_port"),
                plugin=plugin,
                key_locs=locs,
            )
        )
    return out


def merge_cluster(base: list[ClusterService], extra: list[ClusterService]) -> list[ClusterService]:
    """Add a plugin's services: new names are appended, existing ones get the plugin's hosts, receives and
    links."""
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
            if key.startswith(("hosts:", "receives:", "links:")):
                locs.setdefault(key, loc)
        out[index[svc.name]] = dataclasses.replace(
            old,
            hosts=tuple(dict.fromkeys(old.hosts + svc.hosts)),
            receives=tuple(dict.fromkeys(old.receives + svc.receives)),
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


def build_presence(r: Reader, y: Y) -> PresencePolicy | None:
    """The presence policy. Structure and choices are checked here (TT105/106/107/111); commands, fields,
    enum values and the interval by the validator (TT8xx).

    `key_locs` holds each key's value location, and `audience:<name>` for every audience item.
    """
    m = r.mapping(y, "presence", PRESENCE_KEYS, required=("notify", "online", "offline"))
    if m is None:
        return None
    locs = {k: v.loc for k, v in m.items()}
    audience: list[str] = []
    for name, loc in r.str_list(m.get("audience"), "presence audience"):
        if name not in PRESENCE_AUDIENCES:
            r.diags.error(
                "TT111",
                f"presence audience: invalid value '{name}'" + did_you_mean(name, PRESENCE_AUDIENCES),
                loc,
                hint="expected one of: " + ", ".join(PRESENCE_AUDIENCES),
            )
        elif name not in audience:
            audience.append(name)
            locs[f"audience:{name}"] = loc
    clients = r.choice(m.get("clients"), "presence clients", PRESENCE_CLIENTS) if "clients" in m else None
    coalesce = r.string(m.get("coalesce"), "presence coalesce") if "coalesce" in m else None
    batch_from = r.integer(m.get("batch_from"), "presence batch_from") if "batch_from" in m else None
    default = PresencePolicy(loc=y.loc, notify="", online="", offline="")
    return PresencePolicy(
        loc=y.loc,
        notify=r.string(m.get("notify"), "presence notify") or "",
        online=r.string(m.get("online"), "presence online") or "",
        offline=r.string(m.get("offline"), "presence offline") or "",
        audience=tuple(audience) or default.audience,
        clients=clients or default.clients,
        coalesce=coalesce if coalesce is not None else default.coalesce,
        batch=r.string(m.get("batch"), "presence batch") if "batch" in m else None,
        batch_from=batch_from if batch_from is not None else default.batch_from,
        doc=r.string(m.get("doc"), "doc") or "",
        key_locs=locs,
    )

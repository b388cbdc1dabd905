"""Runtime cluster layer: the deployment config (`ttgen.yaml`), its defaults and its validation.

Every key is optional. Errors name the offending key as a dotted path (`services.msg.instances: ...`) and,
when the config came from a file, the file, so a typo is found at once.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from runtime.auth.link_seal import SEAL_POLICIES
from runtime.services.registry_table import SERVICE_TABLE, BadServiceClass, ServiceRef, start_rank

# Per-service defaults. `http_port: preferred:8080` means "8080 if it is free, else any free port" (for every
# instance: N, N+1, ...). Two of every service that holds no state of its own, so a killed worker leaves one
# serving while it restarts; biz is one on SQLite (one writer; docs/cluster.md) and two on PostgreSQL
# (BIZ_INSTANCES); the blob store keeps one folder.
DEFAULT_SERVICES: dict[str, dict[str, Any]] = {
    "login": {"instances": 2, "http_port": "preferred:8080", "client_port": 0, "internal_port": 0},
    "msg": {"instances": 2, "client_port": 0, "max_conn": 100000},
    "router": {"instances": 2},
    "biz": {"instances": 1},
    "file": {"instances": 2},
    "storage": {"instances": 1},
    "gateway": {"instances": 2, "http_port": 0},
}
# biz instances when the config does not say, per storage backend.
BIZ_INSTANCES: dict[str, int] = {"sqlite": 1, "postgres": 2}
# The SQLite database is `<dir>/ttgen.db`; `dir` defaults to data_dir (relative paths: under data_dir).
DEFAULT_STORAGE: dict[str, Any] = {"backend": "sqlite", "encrypt_at_rest": True}
TOP_LEVEL_KEYS = frozenset(
    {
        "data_dir",
        "host",
        "advertise_host",
        "internal_host",
        "internal_advertise_host",
        "only",
        "join",
        "secret_file",
        "link_seal",
        "spec",
        "storage",
        "services",
        "plugins",
        "drain_timeout",
        "start_timeout",
        "restart",
        "endpoints",
        "discovery",
        "layout",
    }
)
# How services find each other: `run_dir` (one host, the default) or `database` (PostgreSQL leases, across
# hosts; runtime.cluster.lease_discovery). The config's static `endpoints:` work beside either.
DEFAULT_DISCOVERY: dict[str, Any] = {"backend": "run_dir"}
# Which service roles share a process (runtime.cluster.layout); the default is the one measured faster on a
# shared 2-core machine (bench/RESULTS.md, "roles that share a process").
LAYOUTS = ("split", "sharded")
DEFAULT_LAYOUT = "split"
# What the process supervisor does when a worker dies: report it only, or start it again (with backoff; not
# after too many restarts of one worker in a short time: a crash loop; see runtime.cluster.processes).
RESTART_POLICIES = ("never", "on-failure")
# SQLite is the embedded default; PostgreSQL (`dsn` required) lets several biz processes and hosts share one
# database (runtime.storage.postgres, docs/storage-postgres.md).
STORAGE_BACKENDS = frozenset({"sqlite", "postgres"})
# Keys every service section understands; anything else is passed to the service unchanged.
COMMON_SERVICE_KEYS = frozenset({"instances", "first_instance", "class", "metrics_port"})
# Addresses a listener may bind but no peer can connect to: what is advertised must then be said
# (`advertise_host` / `internal_advertise_host`).
WILDCARDS = frozenset({"0.0.0.0", "::", "*", ""})
# Services that open the database: on SQLite they must all live on the host of its file.
STORAGE_USERS = frozenset({"biz", "file", "gateway"})


class ConfigError(ValueError):
    """A config problem, naming the dotted key (and the file, when there is one)."""

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        self.key, self.problem, self.source = key, message, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}")


@dataclass(frozen=True)
class ServiceConfig:
    """One cluster service: how many instances, which class, and the section handed to each instance."""

    name: str
    instances: int
    class_ref: str
    options: Mapping[str, Any]
    first_instance: int = 0  # instance numbers are first_instance .. first_instance + instances - 1

    @property
    def numbers(self) -> range:
        """The instance numbers this host runs (unique across the cluster's hosts)."""
        return range(self.first_instance, self.first_instance + self.instances)

    def instance_options(self, instance: int) -> dict[str, Any]:
        """The section for one instance: a fixed (non-zero) `*_port` is offset by the instance number."""
        out: dict[str, Any] = {}
        for key, value in self.options.items():
            if key.endswith("_port") and isinstance(value, int) and value > 0:
                value += instance
            out[key] = value
        return out


@dataclass(frozen=True)
class ClusterConfig:
    """A validated deployment config."""

    data_dir: Path
    host: str = "127.0.0.1"  # where client-facing listeners bind
    internal_host: str = "127.0.0.1"  # where links between services listen (never client-facing)
    advertise_host: str | None = None  # what client-facing endpoints publish (None: `host`)
    internal_advertise_host: str | None = None  # what internal endpoints publish (None: `internal_host`)
    only: tuple[str, ...] = ()  # the services this host runs (empty: all); the rest run on other hosts
    join: str | None = None  # the database of the cluster this host joins (sets storage and discovery)
    secret_file: Path | None = None  # the cluster secret internal links prove; None: <data_dir>/cluster.key
    link_seal: str = "between_hosts"  # which internal links are sealed: runtime.auth.link_seal.SEAL_POLICIES
    spec: str = "teamtalk"
    storage: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_STORAGE))
    services: Mapping[str, ServiceConfig] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    drain_timeout: float = 5.0
    start_timeout: float = 30.0
    restart: str = "on-failure"  # RESTART_POLICIES (with --processes; one process has no workers to restart)
    endpoints: tuple[Mapping[str, Any], ...] = ()  # static endpoints of other hosts
    discovery: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_DISCOVERY))
    layout: str = DEFAULT_LAYOUT  # which roles share a process: runtime.cluster.layout (split | sharded)
    source: str | None = None

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def secret_path(self) -> Path:
        """The cluster secret's file (created, mode 0600, by the first process that starts)."""
        return self.secret_file if self.secret_file is not None else self.data_dir / "cluster.key"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def storage_dir(self) -> Path:
        """The folder of the SQLite database and of the at-rest key (and, on PostgreSQL, of cluster.id)."""
        folder = self.storage.get("dir")
        return Path(str(folder)) if folder else self.data_dir

    @property
    def advertised_host(self) -> str:
        """The address published for client-facing endpoints (what clients and peers connect to)."""
        return self.advertise_host or self.host

    @property
    def advertised_internal_host(self) -> str:
        """The address published for internal endpoints (what other services dial)."""
        return self.internal_advertise_host or self.internal_host

    @property
    def spans_hosts(self) -> bool:
        """True when this host runs part of a cluster (`only` or `join`): peers live elsewhere."""
        return bool(self.only) or self.join is not None

    def ordered_services(self) -> list[ServiceConfig]:
        """Enabled services (instances > 0) this host runs (`only`), in start order."""
        enabled = [
            s for s in self.services.values() if s.instances > 0 and (not self.only or s.name in self.only)
        ]
        return sorted(enabled, key=lambda s: (start_rank(s.name), s.name))

    def as_dict(self) -> dict[str, Any]:
        """A plain mapping (JSON-safe) that `parse_config` turns back into an equal config."""
        return {
            "data_dir": str(self.data_dir),
            "host": self.host,
            "internal_host": self.internal_host,
            **({"advertise_host": self.advertise_host} if self.advertise_host else {}),
            **(
                {"internal_advertise_host": self.internal_advertise_host}
                if self.internal_advertise_host
                else {}
            ),
            **({"only": list(self.only)} if self.only else {}),
            **({"join": self.join} if self.join else {}),
            "secret_file": str(self.secret_path),
            "link_seal": self.link_seal,
            "spec": self.spec,
            "storage": dict(self.storage),
            "plugins": list(self.plugins),
            "drain_timeout": self.drain_timeout,
            "start_timeout": self.start_timeout,
            "restart": self.restart,
            "endpoints": [dict(e) for e in self.endpoints],
            "discovery": dict(self.discovery),
            "layout": self.layout,
            "services": {
                name: {
                    "instances": s.instances,
                    **({"first_instance": s.first_instance} if s.first_instance else {}),
                    "class": s.class_ref,
                    **dict(s.options),
                }
                for name, s in self.services.items()
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


def port_is_free(host: str, port: int) -> bool:
    """True if `port` can be bound on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def resolve_preferred_ports(config: ClusterConfig) -> ClusterConfig:
    """Replace every `preferred:N` port by N if it is free on the config host, else by 0 (any free port)."""
    services: dict[str, ServiceConfig] = {}
    for name, svc in config.services.items():
        options = dict(svc.options)
        for key, value in svc.options.items():
            if isinstance(value, str) and value.startswith("preferred:"):
                wanted = int(value.split(":", 1)[1])
                # A fixed port is offset by the instance number: every instance's must be free.
                ports = [wanted + i for i in range(svc.instances)]
                free = all(p <= 65535 and port_is_free(config.host, p) for p in ports)
                options[key] = wanted if free else 0
        services[name] = replace(svc, options=options)
    return replace(config, services=services)


def _int(value: Any, key: str, source: str | None, *, minimum: int = 0, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer (got {value!r})", source)
    if value < minimum or (maximum is not None and value > maximum):
        upper = f"..{maximum}" if maximum is not None else " or more"
        raise ConfigError(key, f"must be {minimum}{upper} (got {value})", source)
    return value


def _number(value: Any, key: str, source: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(key, f"must be a positive number of seconds (got {value!r})", source)
    return float(value)


def _mapping(value: Any, key: str, source: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"must be a mapping (got {type(value).__name__})", source)
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(f"{key}.{k}", "keys must be strings", source)
    return dict(value)


def _service(name: str, raw: Any, source: str | None) -> ServiceConfig:
    key = f"services.{name}"
    section = {**DEFAULT_SERVICES.get(name, {"instances": 1}), **_mapping(raw, key, source)}
    instances = _int(section.pop("instances"), f"{key}.instances", source, maximum=64)
    first = _int(section.pop("first_instance", 0), f"{key}.first_instance", source, maximum=10_000)
    class_ref = section.pop("class", None) or SERVICE_TABLE.get(name)
    if class_ref is None:
        known = ", ".join(sorted(SERVICE_TABLE))
        raise ConfigError(key, f"unknown service (known: {known}; or give a 'class: module:Class')", source)
    if not isinstance(class_ref, str):
        raise ConfigError(f"{key}.class", f"must be a 'module:Class' string (got {class_ref!r})", source)
    try:
        ServiceRef.parse(class_ref)
    except BadServiceClass as exc:
        raise ConfigError(f"{key}.class", str(exc), source) from None
    for opt, value in section.items():
        if opt.endswith("_port"):
            if isinstance(value, str) and value.startswith("preferred:") and value[10:].isdigit():
                continue
            _int(value, f"{key}.{opt}", source, maximum=65535)
    return ServiceConfig(name, instances, class_ref, section, first)


def parse_config(raw: Any, *, source: str | None = None, base_dir: Path | None = None) -> ClusterConfig:
    """Validate a parsed YAML/JSON document and fill in defaults; ConfigError names the first bad key."""
    doc = _mapping(raw, "(top level)", source)
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(key, f"unknown key (known: {', '.join(sorted(TOP_LEVEL_KEYS))})", source)
    data_dir = doc.get("data_dir", "ttgen-data")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError("data_dir", f"must be a non-empty path (got {data_dir!r})", source)
    data_path = Path(data_dir).expanduser()
    if not data_path.is_absolute():
        data_path = (base_dir or Path.cwd()) / data_path
    host = doc.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise ConfigError("host", f"must be a host name or address (got {host!r})", source)
    internal_host = doc.get("internal_host", "127.0.0.1")
    if not isinstance(internal_host, str) or not internal_host:
        raise ConfigError("internal_host", f"must be a host name or address (got {internal_host!r})", source)
    secret_file = doc.get("secret_file", "cluster.key")
    if not isinstance(secret_file, str) or not secret_file:
        raise ConfigError("secret_file", f"must be a file path (got {secret_file!r})", source)
    secret_path = data_path / Path(secret_file).expanduser()  # relative: under data_dir
    link_seal = doc.get("link_seal", "between_hosts")
    if link_seal not in SEAL_POLICIES:
        raise ConfigError(
            "link_seal",
            f"must be one of {', '.join(SEAL_POLICIES)} (got {link_seal!r}): which internal links are "
            "encrypted (between_hosts: links whose peer is not on a loopback address)",
            source,
        )
    spec = doc.get("spec", "teamtalk")
    if not isinstance(spec, str) or not (spec == "" or spec.isidentifier()):
        raise ConfigError("spec", f"must name a generated stack, e.g. teamtalk (got {spec!r})", source)
    storage = {**DEFAULT_STORAGE, **_mapping(doc.get("storage"), "storage", source)}
    join = _join(doc, storage, source)
    if storage["backend"] not in STORAGE_BACKENDS:
        raise ConfigError(
            "storage.backend",
            f"must be one of {sorted(STORAGE_BACKENDS)} (got {storage['backend']!r})",
            source,
        )
    if storage["backend"] == "postgres":
        dsn = storage.get("dsn")
        if not isinstance(dsn, str) or not dsn.startswith(("postgres://", "postgresql://")):
            raise ConfigError(
                "storage.dsn",
                "the postgres backend needs a connection URL, e.g. postgresql://user@host:5432/ttgen "
                f"(got {dsn!r})",
                source,
            )
        if "path" in storage:
            raise ConfigError("storage.path", "is for the sqlite backend (postgres uses storage.dsn)", source)
        cluster_id = storage.get("cluster_id")
        if cluster_id is not None and (not isinstance(cluster_id, str) or not cluster_id.strip()):
            got = f"(got {cluster_id!r})"
            raise ConfigError("storage.cluster_id", f"must be a non-empty string {got}", source)
    elif "dsn" in storage:
        raise ConfigError("storage.dsn", "is for the postgres backend (storage.backend: postgres)", source)
    if "path" in storage:  # the form docs/cluster.md shows: the database file itself
        db_file = storage.pop("path")
        if not isinstance(db_file, str) or Path(db_file).name != "ttgen.db" or "dir" in storage:
            raise ConfigError(
                "storage.path",
                f"must be a path ending in ttgen.db, without storage.dir (got {db_file!r}); "
                "or set storage.dir, the folder of ttgen.db",
                source,
            )
        storage["dir"] = str(Path(db_file).parent)
    if "dir" in storage:
        folder = storage["dir"]
        if not isinstance(folder, str) or not folder:
            raise ConfigError("storage.dir", f"must be a folder path (got {folder!r})", source)
        storage["dir"] = str(data_path / Path(folder).expanduser())  # relative: under data_dir
    if "key_dir" in storage:  # at-rest keys kept apart from the database (runtime.storage.at_rest)
        folder = storage["key_dir"]
        if not isinstance(folder, str) or not folder:
            raise ConfigError("storage.key_dir", f"must be a folder path (got {folder!r})", source)
        storage["key_dir"] = str(data_path / Path(folder).expanduser())  # relative: under data_dir
    if not isinstance(storage.get("encrypt_at_rest"), bool):
        got = storage["encrypt_at_rest"]
        raise ConfigError("storage.encrypt_at_rest", f"must be true or false (got {got!r})", source)
    services_raw = _mapping(doc.get("services"), "services", source)
    names = list(DEFAULT_SERVICES) + [n for n in services_raw if n not in DEFAULT_SERVICES]
    biz_raw = services_raw.get("biz")
    if biz_raw is None or (isinstance(biz_raw, Mapping) and "instances" not in biz_raw):
        biz_raw = {**(biz_raw or {}), "instances": BIZ_INSTANCES[storage["backend"]]}
        services_raw["biz"] = biz_raw
    services = {name: _service(name, services_raw.get(name), source) for name in names}
    plugins = doc.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError("plugins", f"must be a list of plugin names (got {plugins!r})", source)
    restart = doc.get("restart", "on-failure")
    if restart not in RESTART_POLICIES:
        choices = ", ".join(RESTART_POLICIES)
        raise ConfigError("restart", f"must be one of {choices} (got {restart!r})", source)
    endpoints = doc.get("endpoints", [])
    if not isinstance(endpoints, list):
        raise ConfigError("endpoints", "must be a list of {service, instance, kind, host, port}", source)
    for i, ep in enumerate(endpoints):
        item = _mapping(ep, f"endpoints[{i}]", source)
        for needed in ("service", "kind", "host", "port"):
            if needed not in item:
                raise ConfigError(f"endpoints[{i}].{needed}", "is required", source)
        _int(item["port"], f"endpoints[{i}].port", source, minimum=1, maximum=65535)
    discovery_raw = _mapping(doc.get("discovery"), "discovery", source)
    if join is not None:
        if discovery_raw.get("backend", "database") != "database" and not endpoints:
            raise ConfigError(
                "discovery.backend",
                "run_dir discovery sees this host only; `join` finds the other hosts through the database "
                "(discovery.backend: database) or the static `endpoints:` list",
                source,
            )
        if not endpoints:
            discovery_raw.setdefault("backend", "database")
    discovery = {**DEFAULT_DISCOVERY, **discovery_raw}
    if discovery["backend"] not in ("run_dir", "database"):
        got = discovery["backend"]
        raise ConfigError("discovery.backend", f"must be run_dir or database (got {got!r})", source)
    if discovery["backend"] == "database" and storage["backend"] != "postgres":
        raise ConfigError("discovery.backend", "database needs storage.backend: postgres", source)
    for key in ("ttl", "poll"):
        if key in discovery:
            discovery[key] = _number(discovery[key], f"discovery.{key}", source)
    unknown = set(discovery) - {"backend", "ttl", "poll"}
    if unknown:
        raise ConfigError(f"discovery.{sorted(unknown)[0]}", "unknown key (backend, ttl, poll)", source)
    advertise_host = _address(doc, "advertise_host", source)
    internal_advertise_host = _address(doc, "internal_advertise_host", source)
    only = _only(doc.get("only"), services, source)
    if only or join is not None:
        _check_spanning(
            "only" if only else "join",
            storage,
            discovery,
            bool(endpoints),
            {
                "advertise_host" if advertise_host else "host": advertise_host or host,
                "internal_advertise_host" if internal_advertise_host else "internal_host": (
                    internal_advertise_host or internal_host
                ),
            },
            source,
        )
    layout = doc.get("layout", DEFAULT_LAYOUT)
    if layout not in LAYOUTS:
        raise ConfigError("layout", f"must be one of {', '.join(LAYOUTS)} (got {layout!r})", source)
    return ClusterConfig(
        data_dir=data_path,
        host=host,
        internal_host=internal_host,
        advertise_host=advertise_host,
        internal_advertise_host=internal_advertise_host,
        only=only,
        join=join,
        secret_file=secret_path,
        link_seal=link_seal,
        spec=spec,
        storage=storage,
        services=services,
        plugins=tuple(plugins),
        drain_timeout=_number(doc.get("drain_timeout", 5.0), "drain_timeout", source),
        start_timeout=_number(doc.get("start_timeout", 30.0), "start_timeout", source),
        restart=restart,
        endpoints=tuple(dict(e) for e in endpoints),
        discovery=discovery,
        layout=layout,
        source=source,
    )


def _address(doc: Mapping[str, Any], key: str, source: str | None) -> str | None:
    """An advertised address: a host name or address peers can connect to (not a wildcard)."""
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or value.strip() in WILDCARDS:
        raise ConfigError(
            key, f"must be a host name or address that other hosts can connect to (got {value!r})", source
        )
    return value.strip()


def _join(doc: Mapping[str, Any], storage: dict[str, Any], source: str | None) -> str | None:
    """`join: DSN`: this host joins the cluster whose PostgreSQL database is at DSN: the same as
    storage.backend postgres with that storage.dsn (and, unless static endpoints say otherwise, database
    discovery). Contradicting storage keys are an error, not silently overridden."""
    join = doc.get("join")
    if join is None:
        return None
    if not isinstance(join, str) or not join.startswith(("postgres://", "postgresql://")):
        raise ConfigError(
            "join",
            "must be the cluster's PostgreSQL database URL, e.g. postgresql://ttgen@10.0.0.5:5432/ttgen "
            f"(got {join!r})",
            source,
        )
    section = doc.get("storage")
    raw: Mapping[str, Any] = section if isinstance(section, Mapping) else {}
    if raw.get("backend", "postgres") != "postgres":
        raise ConfigError(
            "join", f"joins a PostgreSQL cluster, but storage.backend is {raw['backend']!r}", source
        )
    if raw.get("dsn", join) != join:
        raise ConfigError("join", "and storage.dsn name different databases: give one of them", source)
    storage["backend"], storage["dsn"] = "postgres", join
    return join


def _only(value: Any, services: Mapping[str, ServiceConfig], source: str | None) -> tuple[str, ...]:
    """`only: [msg, router]` (or "msg,router"): the services this host runs, each known and enabled."""
    if value is None:
        return ()
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(
            "only", f"must be a list of service names, e.g. [msg, router] (got {value!r})", source
        )
    cleaned = [n.strip() for n in names if n.strip()]
    if not cleaned:
        raise ConfigError("only", "names no service (leave it out to run every service)", source)
    for name in cleaned:
        if name not in services:
            known = ", ".join(sorted(services))
            raise ConfigError("only", f"unknown service {name!r} (known: {known})", source)
        if services[name].instances == 0:
            raise ConfigError(
                "only", f"service {name!r} has services.{name}.instances: 0 (give it 1 or more)", source
            )
    return tuple(dict.fromkeys(cleaned))


def is_local_only(address: str) -> bool:
    """True for an address that no other host can reach: loopback (127.0.0.0/8, ::1, localhost)."""
    if address.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name: resolved by the peers


def _check_spanning(
    key: str,
    storage: Mapping[str, Any],
    discovery: Mapping[str, Any],
    static_endpoints: bool,
    advertised: Mapping[str, str],
    source: str | None,
) -> None:
    """The rules for a host that runs part of a cluster (`only` or `join`): a shared database, discovery
    that crosses hosts, and addresses the other hosts can reach."""
    if storage["backend"] != "postgres":
        raise ConfigError(
            key,
            "a SQLite database lives on one host: services on several hosts need storage.backend: postgres "
            "with a storage.dsn every host can reach (or run every service here: leave out only/--only)",
            source,
        )
    if discovery.get("backend") != "database" and not static_endpoints:
        raise ConfigError(
            "discovery.backend",
            f"run_dir discovery sees this host only, so with {key} the other hosts would never be found: "
            "use discovery.backend: database, or list the other hosts' endpoints in `endpoints:`",
            source,
        )
    for name, address in advertised.items():
        if address in WILDCARDS:
            raise ConfigError(
                name if "advertise" in name else name.replace("host", "advertise_host"),
                f"{name} {address!r} binds every interface; say which address the other hosts reach this "
                "one at",
                source,
            )
        if is_local_only(address):
            raise ConfigError(
                name,
                f"{address} is a loopback address: services and clients on other hosts cannot reach it; "
                "set it to this host's routable address",
                source,
            )


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> ClusterConfig:
    """Read a YAML config (or none: all defaults) and apply command-line overrides (dotted keys allowed).

    A relative `data_dir` in a file is relative to the file's folder; one given as an override is relative to
    the current directory.
    """
    doc: Any = {}
    source = None
    base_dir = None
    if path is not None:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("(file)", f"cannot read: {exc.strerror}", source) from None
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "somewhere"
            raise ConfigError("(yaml)", f"not valid YAML at {where}", source) from None
        base_dir = path.parent.resolve()
    doc = copy.deepcopy(doc)
    if isinstance(doc, dict):
        for dotted, value in (overrides or {}).items():
            if dotted == "data_dir" and value is not None:
                value = str(Path(str(value)).resolve())
            _set_dotted(doc, dotted, value)
    return parse_config(doc, source=source, base_dir=base_dir)


def _set_dotted(doc: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def shared_files(config: ClusterConfig) -> list[tuple[Path, str]]:
    """The files every host of one cluster must hold the same copy of, with what each is for.

    The first host makes them (each process creates a missing one); a host that joins must have copies
    before it starts, or it would make keys of its own: its links would be refused (cluster secret), what it
    stores would be unreadable to the others (at-rest key, refused by the database's key check), its tickets
    refused elsewhere, and its cluster id refused by the database as a second cluster."""
    files = [(config.secret_path, "the cluster secret internal links prove")]
    storage = config.storage
    folder = config.storage_dir
    if storage.get("backend") == "postgres" and not storage.get("cluster_id"):
        files.append((folder / "cluster.id", "the cluster's id, which the database records as its owner"))
    running = {s.name for s in config.ordered_services()}
    if storage.get("encrypt_at_rest") and running & STORAGE_USERS:
        files.append((folder / "storage.key", "the at-rest encryption key of stored messages"))
    biz = config.services.get("biz")
    if biz is not None and "biz" in running:
        tickets = biz.options.get("tickets") or {}
        if not isinstance(tickets, Mapping) or tickets.get("enabled", True):
            key_file = tickets.get("key_file") if isinstance(tickets, Mapping) else None
            files.append((Path(str(key_file)) if key_file else folder / "ticket.key", "the ticket key"))
    return files


def missing_shared_files(config: ClusterConfig) -> list[tuple[Path, str]]:
    """For a host that joins (`join`): the shared files it lacks (see `shared_files`); none otherwise."""
    if config.join is None:
        return []
    return [(path, why) for path, why in shared_files(config) if not path.exists()]

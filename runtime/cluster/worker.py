"""Runtime cluster layer: the worker process of `--processes` mode, hosting one service instance, or the
instances of one shard (runtime.cluster.layout) in one event loop.

Run as `python -m runtime.cluster.worker --config FILE --service NAME --instance I [--stack MODULE]`, plus
`--member NAME:I ... --shard NAME` for a shard. The
stack module (e.g. `generated.teamtalk`, chosen by the CLI) provides `registry.REGISTRY` and `servers`.
Protocol with the supervisor: exactly one line on stdout, `READY <json endpoints>` or `FAILED <json error>`;
then the worker runs until SIGTERM/SIGINT or until its stdin closes (the supervisor died), drains, stops and
exits 0. A `peers` line on stdin makes its services look for new peers at once (sent when every worker is up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from runtime.cluster.config import ClusterConfig, parse_config
from runtime.cluster.discovery import RunDirDiscovery
from runtime.cluster.instance import HostedInstance, empty_registry, make_context, start_instance
from runtime.cluster.layout import SHARD_SWITCH_INTERVAL
from runtime.cluster.lease_discovery import open_discovery
from runtime.cluster.logs import attach_process_log, log_path, setup_console
from runtime.registry import Registry
from runtime.services.registry_table import load_service_class
from runtime.transport import run as run_loop

READY, FAILED = "READY", "FAILED"


def load_stack_modules(stack_module: str) -> tuple[Registry, Any]:
    """(registry, servers module) of the stack module named by the supervisor; an empty registry for ''."""
    if not stack_module:
        return empty_registry(), None
    registry = importlib.import_module(f"{stack_module}.registry").REGISTRY
    servers = importlib.import_module(f"{stack_module}.servers")
    if not isinstance(registry, Registry):
        raise TypeError(f"{stack_module}.registry.REGISTRY is not a runtime.registry.Registry")
    return registry, servers


def _announce(kind: str, doc: Any) -> None:
    sys.stdout.write(f"{kind} {json.dumps(doc, sort_keys=True)}\n")
    sys.stdout.flush()


async def _stdin_lines(on_line: Any) -> None:
    """Returns when stdin reaches EOF (the supervisor is gone, or closed it to ask us to stop); each line
    before that goes to `on_line` (`peers`: the supervisor started more workers, look for new peers)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError):  # stdin is not a pipe (run by hand): never "closes"
        await asyncio.Event().wait()
    while line := await reader.readline():
        on_line(line.decode("utf-8", "replace").strip())


def _refresh_peers(hosted: list[HostedInstance]) -> None:
    for h in hosted:
        refresh = getattr(h.service, "refresh_peers", None)
        if callable(refresh):
            try:
                refresh()
            except Exception:
                h.service.log.exception("refresh_peers failed")


async def serve(
    config: ClusterConfig,
    service: str,
    instance: int,
    stack_module: str,
    members: list[tuple[str, int]] | None = None,
    shard: str | None = None,
) -> int:
    """Host one instance (or, with `members`, several in this order, one shard) until told to stop; returns
    the exit code."""
    members = members or [(service, instance)]
    if len(members) > 1:  # the event loop shares the GIL with the roles' threads (biz's SQLite writer)
        sys.setswitchinterval(SHARD_SWITCH_INTERVAL)
    for name, i in members:
        svc = config.services.get(name)
        if svc is None or i not in svc.numbers:
            _announce(FAILED, {"error": f"no instance {i} of service '{name}' in the config"})
            return 2
    first, first_i = members[0]
    # library records of this process (a shard's in <shard>.log; each instance also logs to its own file)
    attach_process_log(config.log_dir / f"{shard}.log" if shard else log_path(config.log_dir, first, first_i))
    hosted: list[HostedInstance] = []
    lease = None
    try:
        registry, servers = load_stack_modules(stack_module)
        discovery, lease = await open_discovery(config, RunDirDiscovery(config.run_dir))
        local: dict[str, Any] = {}
        for name, i in members:
            svc = config.services[name]
            cls = load_service_class(svc.class_ref)
            ctx = make_context(
                config, svc, i, registry=registry, servers=servers, discovery=discovery, local=local
            )
            metrics_port = int(svc.options.get("metrics_port", 0))
            started = await asyncio.wait_for(
                start_instance(cls, ctx, config.log_dir, metrics_port + i if metrics_port else 0, shard),
                config.start_timeout,
            )
            hosted.append(started)
            local.setdefault(name, []).append(started.service)
    except Exception as exc:
        for h in reversed(hosted):
            await h.stop(0.0)
        _announce(FAILED, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    gc.freeze()  # the startup heap is never garbage: keep it out of every later collection
    _announce(
        READY,
        {
            "pid": os.getpid(),
            "endpoints": [
                {"service": e.service, "instance": e.instance, "kind": e.kind, "host": e.host, "port": e.port}
                for h in hosted
                for e in h.endpoints()
            ],
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(
        _stdin_lines(lambda line: _refresh_peers(hosted) if line == "peers" else None)
    )
    watcher.add_done_callback(lambda _: stop.set())
    await stop.wait()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    for h in reversed(hosted):
        await h.stop(config.drain_timeout)
    if lease is not None:
        await lease.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m runtime.cluster.worker`."""
    parser = argparse.ArgumentParser(prog="python -m runtime.cluster.worker")
    parser.add_argument("--config", required=True, type=Path, help="resolved cluster config (JSON)")
    parser.add_argument("--service", required=True)
    parser.add_argument("--instance", required=True, type=int)
    parser.add_argument("--stack", default="", help="stack module providing registry and servers")
    parser.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="SERVICE:INSTANCE",
        help="host this instance too, after the first (a shard: runtime.cluster.layout)",
    )
    parser.add_argument("--shard", default=None, help="the shard whose links are in-process")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_console(args.verbose, process=args.shard or f"{args.service}-{args.instance}")
    members = [(args.service, args.instance)]
    for item in args.member:
        name, _, number = item.partition(":")
        members.append((name, int(number)))
    config = parse_config(json.loads(args.config.read_text(encoding="utf-8")), source=str(args.config))
    # uvloop when installed, and GC settings for a server process
    return run_loop(
        serve(config, args.service, args.instance, args.stack, members, args.shard), server_gc=True
    )


if __name__ == "__main__":
    sys.exit(main())

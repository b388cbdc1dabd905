"""Runtime cluster layer: the worker process of `--processes` mode, hosting exactly one service instance.

Run as `python -m runtime.cluster.worker --config FILE --service NAME --instance I [--stack MODULE]`. The
stack module (e.g. `generated.teamtalk`, chosen by the CLI) provides `registry.REGISTRY` and `servers`.
Protocol with the supervisor: exactly one line on stdout, `READY <json endpoints>` or `FAILED <json error>`;
then the worker runs until SIGTERM/SIGINT or until its stdin closes (the supervisor died), drains, stops and
exits 0.
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
from runtime.cluster.instance import empty_registry, make_context, start_instance
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


async def _stdin_closed() -> None:
    """Returns when stdin reaches EOF: the supervisor is gone (or closed it to ask us to stop)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError):  # stdin is not a pipe (run by hand): never "closes"
        await asyncio.Event().wait()
    while await reader.read(4096):
        pass


async def serve(config: ClusterConfig, service: str, instance: int, stack_module: str) -> int:
    """Host one instance until told to stop; returns the exit code."""
    svc = config.services.get(service)
    if svc is None or instance not in svc.numbers:
        _announce(FAILED, {"error": f"no instance {instance} of service '{service}' in the config"})
        return 2
    attach_process_log(log_path(config.log_dir, service, instance))  # library records of this process
    try:
        registry, servers = load_stack_modules(stack_module)
        cls = load_service_class(svc.class_ref)
        discovery, lease = await open_discovery(config, RunDirDiscovery(config.run_dir))
        ctx = make_context(
            config, svc, instance, registry=registry, servers=servers, discovery=discovery, local={}
        )
        metrics_port = int(svc.options.get("metrics_port", 0))
        hosted = await asyncio.wait_for(
            start_instance(cls, ctx, config.log_dir, metrics_port + instance if metrics_port else 0),
            config.start_timeout,
        )
    except Exception as exc:
        _announce(FAILED, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    gc.freeze()  # the startup heap is never garbage: keep it out of every later collection
    _announce(
        READY,
        {
            "pid": os.getpid(),
            "endpoints": [{"kind": e.kind, "host": e.host, "port": e.port} for e in hosted.endpoints()],
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_stdin_closed())
    watcher.add_done_callback(lambda _: stop.set())
    await stop.wait()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await hosted.stop(config.drain_timeout)
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
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_console(args.verbose, process=f"{args.service}-{args.instance}")
    config = parse_config(json.loads(args.config.read_text(encoding="utf-8")), source=str(args.config))
    # uvloop when installed, and GC settings for a server process
    return run_loop(serve(config, args.service, args.instance, args.stack), server_gc=True)


if __name__ == "__main__":
    sys.exit(main())

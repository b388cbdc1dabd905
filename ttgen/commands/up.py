"""CLI layer: `ttgen up`, which starts the IM cluster (one process, or one process per service instance)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runtime.auth.secret_files import SecretFileError, cluster_secret
from runtime.cluster.config import (
    ClusterConfig,
    ConfigError,
    load_config,
    missing_shared_files,
    resolve_preferred_ports,
)
from runtime.cluster.logs import setup_console
from runtime.cluster.processes import ProcessSupervisor
from runtime.cluster.runner import ClusterRunner, ClusterStartError
from runtime.services.base import Endpoint
from ttgen.stack import Stack, load_stack


def endpoint_table(endpoints: list[Endpoint]) -> str:
    """The 'where does everything listen' table printed at start."""
    rows = [("SERVICE", "KIND", "ADDRESS")]
    for e in endpoints:
        address = f"{e.host}:{e.port}"
        if e.kind == "http" and e.service == "login":
            address = f"http://{address}/msg_server"
        elif e.kind in ("http", "metrics"):
            address = f"http://{address}/"
        rows.append((f"{e.service}-{e.instance}", e.kind, address))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"  {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}" for r in rows)


def page_address(endpoints: list[Endpoint]) -> str:
    """The chat page's address (the first gateway's HTTP endpoint), "" without a gateway. A gateway listening
    on every interface is shown at 127.0.0.1, where a browser on this machine reaches it."""
    for e in endpoints:
        if e.service == "gateway" and e.kind == "http":
            host = "127.0.0.1" if e.host in ("", "0.0.0.0", "::") else e.host
            return f"http://{f'[{host}]' if ':' in host else host}:{e.port}/"
    return ""


def build_config(
    config_file: Path | None,
    data_dir: Path | None,
    host: str | None,
    msg_servers: int | None,
    restart: str | None = None,
    *,
    only: str | None = None,
    join: str | None = None,
    first_instance: int | None = None,
    internal_host: str | None = None,
    advertise_host: str | None = None,
) -> ClusterConfig:
    """Config file (or defaults) plus command-line overrides, with preferred ports resolved."""
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    if host is not None:
        overrides["host"] = host
    if internal_host is not None:
        overrides["internal_host"] = internal_host
    if advertise_host is not None:
        overrides["advertise_host"] = advertise_host
    if only is not None:
        overrides["only"] = only
    if join is not None:
        overrides["join"] = join
    if msg_servers is not None:
        overrides["services.msg.instances"] = msg_servers
    if restart is not None:
        overrides["restart"] = restart
    try:
        config = load_config(config_file, overrides)
        if first_instance is not None:  # every service this host runs numbers its instances from N
            overrides.update(
                {f"services.{s.name}.first_instance": first_instance for s in config.ordered_services()}
            )
            config = load_config(config_file, overrides)
        config = resolve_preferred_ports(config)
    except ConfigError as exc:
        raise click.ClickException(f"config error: {exc}") from None
    missing = missing_shared_files(config)
    if missing:
        listed = "; ".join(f"{path} ({why})" for path, why in missing)
        raise click.ClickException(
            f"joining a cluster needs a copy of its shared files, and these are missing: {listed}. "
            "Copy them from a host of the cluster (docs/scale.md, 'Files every host shares')"
        )
    try:  # made here, before any worker starts, so a bad secret file is one clear line
        cluster_secret(config.secret_path)
    except (SecretFileError, OSError) as exc:
        raise click.ClickException(f"cluster secret: {exc}") from None
    return config


async def _run(
    config: ClusterConfig,
    stack: Stack,
    *,
    processes: bool,
    demo: bool,
    demo_once: bool,
    verbose: bool,
    say: Callable[[str], None],
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    supervisor: ClusterRunner | ProcessSupervisor
    if processes:
        supervisor = ProcessSupervisor(config, stack.module, console=say, verbose=verbose)
    else:
        supervisor = ClusterRunner(config, stack.registry, stack.servers, console=say)
    mode = "one process per service instance" if processes else "one process"
    say(f"ttgen: starting the {stack.name or 'bare'} cluster ({mode}) in {config.data_dir}")
    start = asyncio.create_task(supervisor.start())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({start, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not start.done():  # signalled while starting: let start finish its cleanup, then stop
        start.cancel()
        try:
            await start
        except (asyncio.CancelledError, ClusterStartError):
            pass
        await supervisor.stop()
        say("ttgen: stopped before the cluster was up")
        return 0
    try:
        start.result()
    except ClusterStartError as exc:
        stopper.cancel()
        say(f"ttgen: error: {exc}")
        say(f"ttgen: logs are in {config.log_dir}")
        return 1
    say("ttgen: cluster is up; listening on:")
    say(endpoint_table(supervisor.endpoints()))
    page = page_address(supervisor.endpoints())
    if page:
        say(f"ttgen: the chat page: {page}")
    say(f"ttgen: logs in {config.log_dir}; `ttgen status --data-dir {config.data_dir}` shows health and load")
    code = 0
    if demo or demo_once:
        from ttgen.demo import run_demo

        demo_task = asyncio.create_task(run_demo(config, stack, say=say))
        await asyncio.wait({demo_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not demo_task.done():  # signalled during the demo: close its clients, then stop
            demo_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await demo_task
        else:
            try:
                ok = demo_task.result()
            except Exception as exc:  # the demo failing must still stop the cluster cleanly
                say(f"ttgen: demo failed: {type(exc).__name__}: {exc}")
                ok = False
            code = 0 if ok else 1
    if demo_once:
        stopper.cancel()
    elif not stopper.done():
        if demo:
            from ttgen.demo import join_hint

            say(join_hint(config, config.data_dir == Path.cwd() / "ttgen-data"))
        say("ttgen: running; press Ctrl-C to stop")
        await stopper
    say("ttgen: stopping (draining connections)...")
    await supervisor.stop()
    say("ttgen: stopped")
    return code


@click.command("up")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Cluster config (ttgen.yaml); every key optional.",
)
@click.option("--processes", is_flag=True, help="Run one process per service instance.")
@click.option("--msg-servers", type=click.IntRange(0, 64), help="Number of msg server instances.")
@click.option(
    "--restart",
    type=click.Choice(["never", "on-failure"]),
    help="With --processes: on-failure (the default) starts a worker that dies again, with backoff, "
    "unless it crash-loops; never reports it and keeps the rest running.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the database, logs and run files live (default ./ttgen-data).",
)
@click.option("--host", help="Address the client-facing listeners bind (default 127.0.0.1).")
@click.option("--internal-host", help="Address the links between services bind (default 127.0.0.1).")
@click.option(
    "--advertise-host",
    help="Address published for client-facing endpoints when it is not the bound one (e.g. --host 0.0.0.0).",
)
@click.option(
    "--only",
    metavar="SERVICES",
    help="Run only these services on this host, e.g. msg,router (the rest run on other hosts); "
    "needs PostgreSQL storage and database (or static) discovery.",
)
@click.option(
    "--join",
    metavar="DSN",
    help="Join the cluster whose PostgreSQL database is at DSN (storage.backend postgres, storage.dsn DSN, "
    "database discovery); its shared files (cluster.key, cluster.id, storage.key, ticket.key) must be "
    "copied here first.",
)
@click.option(
    "--first-instance",
    type=click.IntRange(0, 10_000),
    help="Number this host's instances from N (instance numbers must differ between hosts).",
)
@click.option(
    "--demo", is_flag=True, help="Create demo users and run a scripted conversation, then keep running."
)
@click.option(
    "--demo-once",
    "--exit-after-demo",
    "demo_once",
    is_flag=True,
    help="Run the demo conversation, then stop the cluster and exit (for tests).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show every service's info log lines on the console.")
def up(
    config_file: Path | None,
    processes: bool,
    msg_servers: int | None,
    restart: str | None,
    data_dir: Path | None,
    host: str | None,
    internal_host: str | None,
    advertise_host: str | None,
    only: str | None,
    join: str | None,
    first_instance: int | None,
    demo: bool,
    demo_once: bool,
    verbose: bool,
) -> None:
    """Start the IM cluster and run it until Ctrl-C (SIGINT) or SIGTERM; then drain, stop and exit 0.

    \b
    Examples:
      ttgen up                          # defaults: SQLite in ./ttgen-data, 2 msg servers, 2 routers
      ttgen up --processes --msg-servers 4
      ttgen up --processes --restart on-failure
      ttgen up --demo                   # what `./dev demo` runs
      ttgen up --processes --join postgresql://ttgen@10.0.0.5/ttgen --host 10.0.0.7 \\
               --internal-host 10.0.0.7 --only msg,router --first-instance 2   # part of a multi-host cluster
    """
    if restart is not None and not processes:
        raise click.UsageError("--restart applies to --processes only")
    config = build_config(
        config_file,
        data_dir,
        host,
        msg_servers,
        restart,
        only=only,
        join=join,
        first_instance=first_instance,
        internal_host=internal_host,
        advertise_host=advertise_host,
    )
    if (demo or demo_once) and config.spans_hosts:
        raise click.UsageError("--demo runs a whole cluster on one host: not with --only or --join")
    stack = load_stack(config.spec)
    setup_console(verbose)

    def say(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    code = asyncio.run(
        _run(config, stack, processes=processes, demo=demo, demo_once=demo_once, verbose=verbose, say=say)
    )
    sys.exit(code)

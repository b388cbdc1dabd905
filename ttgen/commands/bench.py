"""CLI layer: `ttgen bench SCENARIO`, load benchmarks against a cluster it starts or a running one."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from runtime.cluster.config import ConfigError, load_config
from ttgen.bench.plan import SCENARIOS, Options, defaults


def _say(line: str) -> None:
    click.echo(line, err=True)
    sys.stderr.flush()


@click.command("bench")
@click.argument("scenario", type=click.Choice(SCENARIOS))
@click.option("--users", type=click.IntRange(0, 1_000_000), help="Simulated users (connections scenarios).")
@click.option(
    "--pc-share", type=click.FloatRange(0, 1), help="Share of PC clients; the rest are mobile (0.3)."
)
@click.option(
    "--msg-servers", type=click.IntRange(1, 64), help="Msg server processes of the started cluster."
)
@click.option("--routers", type=click.IntRange(1, 16), help="Router processes of the started cluster.")
@click.option("--biz", type=click.IntRange(1, 16), help="Biz processes of the started cluster.")
@click.option(
    "--layout",
    type=click.Choice(["sharded", "split"]),
    help="Roles per process of the started cluster: msg+biz+router per shard, or one per instance "
    "(default: the config's default, runtime.cluster.layout).",
)
@click.option(
    "--client-procs", type=click.IntRange(1, 64), help="Load processes (default: 1 per 15,000 users, >= 2)."
)
@click.option(
    "--sources",
    type=click.IntRange(1, 250),
    help="Loopback source addresses 127.0.0.2.. (default: 1 per 10,000).",
)
@click.option("--login-rate", type=click.FloatRange(0.1), help="Logins per second offered (open loop).")
@click.option(
    "--heartbeat", type=click.FloatRange(0), help="Seconds between a client's heartbeats (0: none)."
)
@click.option("--hold", type=click.FloatRange(0), help="Seconds to hold every connection after the logins.")
@click.option(
    "--pairs", type=click.IntRange(0), help="Sender/receiver pairs (one-to-one; login-storm: probes)."
)
@click.option("--rate", type=click.FloatRange(0.1, 20), help="Messages per second per sender.")
@click.option("--duration", type=click.FloatRange(0.1), help="Seconds of message load.")
@click.option("--groups", type=click.IntRange(0), help="Groups (group scenario), one sender each.")
@click.option("--group-size", type=click.IntRange(2, 2000), help="Members per group.")
@click.option(
    "--hash",
    "hash_",
    type=click.Choice(["config", "cheap"]),
    help="Password hashing: the cluster's argon2id parameters, or cheap ones (t=1, 1 MiB) that measure "
    "everything but the hash.",
)
@click.option(
    "--restart",
    is_flag=True,
    help="connections: restart the cluster after the hold and time the reconnect storm.",
)
@click.option(
    "--reconnect",
    type=click.Choice(["password", "ticket"]),
    default="password",
    show_default=True,
    help="How clients come back after --restart.",
)
@click.option("--max-seconds", type=click.FloatRange(1), help="Hard bound of the run.")
@click.option("--smoke", is_flag=True, help="A small, fast run with cheap hashing (CI).")
@click.option(
    "--target",
    "target",
    type=click.Path(file_okay=False, path_type=Path),
    help="Bench the running cluster of this data dir instead of starting one.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --target: the running cluster's config file.",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON."
)
@click.option(
    "--markdown",
    "md_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the Markdown table to a file too.",
)
def bench(
    scenario: str,
    smoke: bool,
    target: Path | None,
    config_file: Path | None,
    json_path: Path | None,
    md_path: Path | None,
    hash_: str | None,
    **given: Any,
) -> None:
    """Run a load scenario against the cluster and report what it measured.

    \b
    Scenarios:
      connections     log users in and hold them idle (heartbeats), measure memory per connection
      login-storm     probe pairs exchange messages while a storm of users logs in
      presence-storm  PC users log in; counts the presence notifications they receive
      one-to-one      pairs across msg servers, open-loop messages, latency from the due time
      group           group messages, latency to every member
    \b
    Examples:
      ttgen bench connections --users 2000 --smoke
      ttgen bench connections --users 100000 --msg-servers 7 --hold 600 --hash cheap
      ttgen bench one-to-one --pairs 500 --rate 20 --duration 20 --msg-servers 2
      ttgen bench login-storm --users 20000 --pairs 100 --rate 20 --json storm.json

    Load processes run apart from the cluster (`python -m runtime.loadgen.worker`), connect from 127.0.0.x
    source addresses and report once a second. Exit 1 if a login failed, a heartbeat or message went
    unanswered, or a delivery is missing or duplicated.
    """
    values: dict[str, Any] = {"scenario": scenario, **defaults(scenario, smoke)}
    values.update({k: v for k, v in given.items() if v is not None})
    if hash_ is not None:
        values["hash"] = hash_
    known = {f.name for f in fields(Options)}
    opts = Options(**{k: v for k, v in values.items() if k in known})
    config = None
    if target is not None or config_file is not None:
        try:
            config = load_config(config_file, {"data_dir": str(target)} if target else {})
        except ConfigError as exc:
            raise click.ClickException(f"config error: {exc}") from None
    from ttgen.bench.report import markdown
    from ttgen.bench.run import run_bench

    async def main() -> dict[str, Any]:
        # SIGTERM and SIGINT (ignored in background jobs otherwise) end the run cleanly: the load processes
        # and the cluster are stopped by run_bench's cleanup.
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await run_bench(opts, target=config, say=_say)

    try:
        report = asyncio.run(main())
    except asyncio.CancelledError:
        raise click.ClickException("interrupted; the cluster and the load processes were stopped") from None
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    table = markdown(report)
    click.echo(table)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if md_path is not None:
        md_path.write_text(table + "\n", encoding="utf-8")
    sys.exit(0 if report["ok"] else 1)

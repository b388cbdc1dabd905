"""CLI layer (bench): one bench run: seed users, start (or find) the cluster, drive the load processes through
the scenario's phases with progress output, collect what they measured and judge it (runtime.loadgen does the
client side; ttgen.bench.report lays the result out)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from runtime.auth import HashPolicy, PasswordHasher
from runtime.cluster.config import ClusterConfig
from ttgen.bench.cluster import CHEAP_AUTH, PASSWORD_MD5, Cluster, bench_config, hasher_for, seed
from ttgen.bench.loadprocs import LoadProc, jobs, merged_histograms, totals
from ttgen.bench.plan import Options, Plan, make_plan
from ttgen.bench.report import judge, summarize

Say = Callable[[str], None]


class Run:
    """The state of one run: plan, cluster, load processes, samples and phase times."""

    def __init__(self, opts: Options, plan: Plan, cluster: Cluster, say: Say) -> None:
        self.opts = opts
        self.plan = plan
        self.cluster = cluster
        self.say = say
        self.procs: list[LoadProc] = []
        self.t0 = time.monotonic()
        self.marks: dict[str, float] = {}  # phase name -> time.monotonic()
        self.samples: dict[str, dict[str, dict[str, float]]] = {}  # moment -> cluster.sample()
        self.extra: dict[str, Any] = {}

    # -- helpers -----------------------------------------------------------------------------------------
    def mark(self, name: str) -> float:
        self.marks[name] = now = time.monotonic()
        return now

    def sample(self, name: str) -> None:
        self.samples[name] = self.cluster.sample()

    def totals(self) -> dict[str, float]:
        return totals(self.procs)

    def broadcast(self, line: str) -> None:
        for p in self.procs:
            p.send(line)

    def logins_finished(self) -> float:
        t = self.totals()
        return t["login_ok"] + t["login_refused"] + t["login_timeout"] + t["connect_failed"]

    async def wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline or all(p.finished.done() for p in self.procs):
                return done()
            await asyncio.sleep(0.1)
        return True

    async def report_progress(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            t = self.totals()
            cpu = sum(s["cpu_s"] for s in self.cluster.sample().values())
            line = (
                f"[{time.monotonic() - self.t0:7.1f}s] online {int(t['online'])}/{len(self.plan.users)}"
                f"  logins ok {int(t['login_ok'])} failed {int(t['login_refused'] + t['login_timeout'])}"
                f" connect-failed {int(t['connect_failed'])}"
                f"  heartbeats {int(t['hb_answered'])}/{int(t['hb_sent'])}"
            )
            if self.plan.senders:
                line += (
                    f"  msgs sent {int(t['sent'])} acked {int(t['acked'])} delivered {int(t['delivered'])}"
                )
            if t["presence"]:
                line += f"  presence {int(t['presence'])}"
            if t["relogins"] or t["lost"]:
                line += f"  lost {int(t['lost'])} relogins {int(t['relogins'])}"
            self.say(line + f"  cluster cpu {cpu:.1f}s")

    # -- phases ------------------------------------------------------------------------------------------
    async def login(self, phase: int, expect_total: int) -> bool:
        start = time.monotonic() + 0.3
        self.marks[f"login{phase}"] = start
        self.broadcast(f"login {phase} {start!r}")
        n = self.plan.phase_size(phase)
        ok = await self.wait_until(
            lambda: self.logins_finished() >= expect_total,
            n / self.opts.login_rate + self.opts.login_timeout + 30,
        )
        self.mark(f"login{phase}_done")
        return ok

    async def traffic(self) -> float:
        start = time.monotonic() + 0.3
        self.marks["traffic"] = start
        self.broadcast(f"traffic {start!r}")
        return start

    async def scenario(self) -> None:
        opts, plan = self.opts, self.plan
        phase0 = plan.phase_size(0)
        self.sample("idle")
        await self.login(0, phase0)
        if opts.scenario == "login-storm" and plan.phase_size(1):
            if plan.senders:
                start = await self.traffic()
                self.sample("traffic_start")
            await self.login(1, phase0 + plan.phase_size(1))
            if plan.senders:
                await asyncio.sleep(max(0.0, start + opts.duration - time.monotonic()))
        elif plan.senders:
            await self.settle()
            start = await self.traffic()
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            self.sample("traffic_start")
            await asyncio.sleep(max(0.0, start + opts.duration - time.monotonic()))
        if opts.hold > 0:
            await asyncio.sleep(opts.hold)
        self.extra["online_at_hold"] = self.totals()["online"]
        self.sample("held")
        self.mark("held")
        if opts.restart:
            await self.restart()
        self.broadcast("stop")
        self.mark("stopped")
        await self.drain()
        self.sample("end")

    async def settle(self, limit: float = 60.0) -> None:
        """Wait until the presence notifications of the logins stop arriving (N PC logins cause up to N^2 of
        them), so the message load measures messages, not the tail of a presence storm."""
        self.mark("settle")
        last = -1.0
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            now = self.totals()["presence"]
            if now == last:
                break
            last = now
            await asyncio.sleep(1.2)  # load processes report once a second
        self.mark("settled")

    async def restart(self) -> None:
        before = self.totals()["online"]
        self.extra["restart_online_before"] = before
        self.mark("restart")
        self.sample("restart_before")
        self.say(f"bench: restarting the cluster with {int(before)} users online")
        await self.cluster.restart()
        self.mark("restarted")
        self.sample("restart_after")  # new processes: their CPU counts from here
        self.say("bench: cluster up again; waiting for every user to log in again")
        await self.wait_until(
            lambda: self.totals()["relogins"] >= before, self.opts.max_seconds / 2 + before / 100
        )
        self.mark("reconnected")

    async def drain(self) -> None:
        per_msg = self.plan.expected_deliveries_per_message()

        def settled() -> bool:
            t = self.totals()
            return all(p.progress.get("stopped") for p in self.procs) and (
                t["hb_answered"] + t["hb_cut"] >= t["hb_sent"]
                and t["acked"] + t["refused"] >= t["sent"]
                and t["delivered"] >= t["sent"] * per_msg
            )

        await self.wait_until(settled, self.opts.drain)
        self.mark("drained")


async def run_bench(
    opts: Options, *, target: ClusterConfig | None, say: Say, progress_every: float = 1.0
) -> dict[str, Any]:
    """Run one bench scenario; returns the report (see ttgen.bench.report)."""
    plan = make_plan(opts)
    tmp: Path | None = None
    if target is None:
        tmp = Path(tempfile.mkdtemp(prefix="ttgen-bench-"))
        config = bench_config(opts, tmp / "data")
    else:
        config = target
    cluster = Cluster(config, opts.stack, owned=target is None, say=say)
    run = Run(opts, plan, cluster, say)
    reporter: asyncio.Task[None] | None = None
    try:
        cheap = PasswordHasher(policy=HashPolicy.from_config(CHEAP_AUTH))
        hasher = cheap if opts.hash == "cheap" else hasher_for(config)
        digest = await asyncio.to_thread(hasher.hash_wire, PASSWORD_MD5)
        from ttgen.commands.admin import open_cluster_storage

        storage = await open_cluster_storage(config)
        try:
            say(
                f"bench: creating {len(plan.users)} users"
                + (f" and {len(plan.groups)} groups" if plan.groups else "")
            )
            ids = await seed(storage, plan, digest, say)
        finally:
            await storage.close()
        if cluster.owned:
            say(f"bench: starting the cluster ({opts.msg_servers} msg servers) in {config.data_dir}")
        await cluster.start()
        endpoints = cluster.msg_endpoints()
        missing = sorted({u.instance for u in plan.users} - set(endpoints))
        if missing:
            raise RuntimeError(f"no msg server instance {missing} is listening (is the cluster running?)")
        job_dir = tmp if tmp is not None else config.data_dir
        run.procs = [
            await LoadProc.spawn(i, job, job_dir)
            for i, job in enumerate(jobs(plan, ids, endpoints, config.run_dir))
        ]
        await asyncio.wait_for(asyncio.gather(*(p.ready for p in run.procs)), 120)
        say(
            f"bench: {opts.scenario}: {len(plan.users)} users, {plan.processes} load processes, "
            f"{len(plan.sources)} source addresses ({plan.sources[0]}..{plan.sources[-1]})"
        )
        reporter = asyncio.get_running_loop().create_task(run.report_progress(progress_every))
        await asyncio.wait_for(run.scenario(), opts.max_seconds)
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        await asyncio.gather(*(p.close() for p in run.procs), return_exceptions=True)
        await cluster.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    report = summarize(run, merged_histograms(run.procs), asdict(opts))
    report["problems"] = judge(report)
    report["ok"] = not report["problems"]
    return report

"""CLI layer (bench): the load processes of a run (runtime.loadgen.worker): jobs, commands, reports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from runtime.loadgen.conn import Counters
from runtime.loadgen.histogram import Histogram
from ttgen.bench.cluster import PASSWORD_MD5
from ttgen.bench.plan import Plan

# What the orchestrator sums over the load processes: every counter a load process keeps, and its CPU.
COUNTERS = (*Counters.FIELDS, "online", "cpu_s")


def jobs(
    plan: Plan, ids: list[int], endpoints: dict[int, tuple[str, int]], run_dir: Path
) -> list[dict[str, Any]]:
    """One job document per load process."""
    opts = plan.options
    out: list[dict[str, Any]] = []
    for p in range(plan.processes):
        mine = [u for u in plan.users if u.process == p]
        local = {u.index: k for k, u in enumerate(mine)}
        senders = []
        for sender, target, group in plan.senders:
            if sender in local:
                to_id = plan.group_ids[target] if group else ids[target]
                senders.append([local[sender], ids[sender], to_id, int(group)])
        out.append(
            {
                "stack": opts.stack,
                "worker": p,
                "run_dir": str(run_dir),
                "password_md5": PASSWORD_MD5,
                "endpoints": {str(k): list(v) for k, v in endpoints.items()},
                "users": [[u.name, u.client_type, u.instance, u.source, u.phase] for u in mine],
                "senders": senders,
                "login_rate": opts.login_rate / plan.processes,
                "max_inflight": opts.max_inflight,
                "login_timeout": opts.login_timeout,
                "heartbeat": opts.heartbeat,
                "rate": opts.rate,
                "duration": opts.duration,
                "reconnect": opts.reconnect if opts.restart else "none",
                "reconnect_spread": opts.reconnect_spread,
                "max_seconds": opts.max_seconds,
            }
        )
    return out


class LoadProc:
    """One running load process: its latest progress and, at the end, its result."""

    def __init__(self, index: int, process: asyncio.subprocess.Process) -> None:
        self.index = index
        self.process = process
        self.progress: dict[str, Any] = {}
        self.result: dict[str, Any] | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.finished = asyncio.get_running_loop().create_future()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def spawn(cls, index: int, job: dict[str, Any], job_dir: Path) -> LoadProc:
        path = job_dir / f"load-{index}.json"
        path.write_text(json.dumps(job), encoding="utf-8")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "runtime.loadgen.worker",
            str(path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        return cls(index, process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            while line := await self.process.stdout.readline():
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if "progress" in doc:
                        self.progress = doc["progress"]
                    elif "ready" in doc and not self.ready.done():
                        self.ready.set_result(True)
                    elif "result" in doc:
                        self.result = doc["result"]
                        self.progress = doc["result"]
        finally:
            if not self.ready.done():
                self.ready.set_exception(
                    RuntimeError(f"load process {self.index} exited before it was ready")
                )
            if not self.finished.done():
                self.finished.set_result(None)

    def send(self, line: str) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write((line + "\n").encode())

    async def close(self, timeout: float = 30.0) -> None:
        """Ask for the result, wait for it and for the process to exit (killed after `timeout`)."""
        self.send("close")
        try:
            await asyncio.wait_for(asyncio.shield(self.finished), timeout)
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


def total(procs: Iterable[LoadProc], key: str) -> float:
    return sum(float(p.progress.get(key, 0)) for p in procs)


def totals(procs: Iterable[LoadProc]) -> dict[str, float]:
    procs = list(procs)
    return {k: total(procs, k) for k in COUNTERS}


def merged_histograms(procs: Iterable[LoadProc]) -> dict[str, Histogram]:
    out: dict[str, Histogram] = {}
    for p in procs:
        for name, doc in ((p.result or {}).get("histograms") or {}).items():
            out.setdefault(name, Histogram()).merge(Histogram.from_json(doc))
    return out

#!/usr/bin/env python3
"""Chaos run: 1:1 and group traffic while SIGKILLing workers, then a Jepsen-style check of what was delivered.

A process cluster (`ttgen up --processes` machinery: login, 2 msg, 2 routers, biz on SQLite) carries traffic
from simulated devices. Each device logs in through the login service (`GET /msg_server`), sends numbered
messages one at a time (to its peer, and every fifth one to its group), each with a client msg id, and waits
for the ack; a send whose ack never came (the link died, a timeout) is sent again with the same client msg id
and text after the device reconnects, until it is acked or refused (msg id 0). Every device reads its pushes,
and after each login it re-syncs history, as a TeamTalk client does.

A nemesis SIGKILLs a random msg, router, biz or login worker every few seconds and starts it again after a
short pause. At the end every device syncs once more, and the checker asks, per conversation:

- lost: acked to the sender, missing from what a recipient saw (pushes and syncs, deduped by msg id);
- duplicated: one logical message (sender, number) stored under two msg ids;
- reordered: a conversation's stored messages (by msg id) out of their sender's order;
- phantom: refused to the sender (msg id 0) but stored;
- unread: a recipient's unread count differing from the messages stored for it (nothing is read here).

Usage: bench/chaos.py --duration 600 --devices 40 --rate 10 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from generated.teamtalk.registry import REGISTRY  # noqa: E402
from runtime.auth import PasswordHasher, wire_password  # noqa: E402
from runtime.client import ClientCore  # noqa: E402
from runtime.cluster.config import ClusterConfig, parse_config  # noqa: E402
from runtime.cluster.processes import ProcessSupervisor  # noqa: E402
from runtime.storage import NewUser  # noqa: E402
from runtime.storage.models import GroupType  # noqa: E402
from runtime.storage.sqlite import SqliteStorage  # noqa: E402

PASSWORD = "chaos"
AUTH = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}  # cheap hashes: logins are not measured here
VICTIMS = ("msg", "biz", "router", "login")
GROUP_EVERY = 5  # every fifth message of a device goes to its group
GROUP_SIZE = 4
PC = 0x01
SINGLE, GROUP = 1, 2
_cls = {
    name: REGISTRY.by_name(name).message_class
    for name in (
        "CID_LOGIN_REQ_USERLOGIN",
        "CID_MSG_DATA",
        "CID_MSG_DATA_ACK",
        "CID_MSG_LIST_REQUEST",
        "CID_MSG_UNREAD_CNT_REQUEST",
    )
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sent:
    """One logical message: where it went, its number in its sender's sequence, and what became of it."""

    session_type: int
    session_id: int
    number: int
    text: bytes
    acked: int = 0  # the msg id of the ack
    refused: bool = False
    attempts: int = 0
    # An attempt whose outcome is unknown (no ack: the link died, a timeout): the message may be stored, so a
    # later msg id 0 ("not stored by this attempt") is no refusal; it is sent again with its client msg id.
    uncertain: bool = False


@dataclass
class Device:
    """A simulated client: one user on one PC, sending to a peer and a group, collecting what it receives."""

    name: str
    user_id: int
    peer: int
    group: int
    sent: list[Sent] = field(default_factory=list)
    seen: dict[tuple[int, int], dict[int, bytes]] = field(default_factory=lambda: defaultdict(dict))
    known: dict[tuple[int, int], set[int]] = field(default_factory=lambda: defaultdict(set))  # own ids too
    own_last: dict[tuple[int, int], int] = field(default_factory=lambda: defaultdict(int))  # newest own id
    mark: dict[tuple[int, int], int] = field(default_factory=lambda: defaultdict(int))  # all ids <= known

    def note(self, conv: tuple[int, int], msg_id: int) -> None:
        """Record a msg id of a conversation (per conversation and gapless) and advance the mark."""
        known = self.known[conv]
        known.add(msg_id)
        mark = self.mark[conv]
        while mark + 1 in known:
            mark += 1
        self.mark[conv] = mark

    by_push: int = 0
    by_sync: int = 0
    logins: int = 0
    ack_times: list[float] = field(default_factory=list)


@dataclass
class Kill:
    service: str  # the role aimed at
    instance: int
    at: float
    restarted_at: float = 0.0
    roles: tuple[str, ...] = ()  # every role of the killed process (a shard holds msg, biz and router)


def roles_of(worker: Any) -> tuple[str, ...]:
    """The service roles a worker process hosts (several in the sharded layout)."""
    group = getattr(worker, "group", None)
    if group is not None:
        return tuple(name for name, _ in group.members)
    return (worker.service,)


class Chaos:
    """The cluster, the devices and the nemesis of one run."""

    def __init__(
        self,
        data_dir: Path,
        devices: int,
        rate: float,
        kill_every: float,
        seed: int,
        cycle: bool = False,
        layout: str | None = None,
    ) -> None:
        """`cycle`: kill msg, biz, router, login in turn (every kind early) rather than at random. `layout`:
        the cluster's (runtime.cluster.layout; default: the config's default); in the sharded layout a kill
        of a role takes down its whole shard."""
        self.cycle = cycle
        self.data_dir = data_dir
        self.n = devices
        self.rate = rate
        self.kill_every = kill_every
        self.random = random.Random(seed)
        self.http_port = free_port()
        self.config: ClusterConfig = parse_config(
            {
                "data_dir": str(data_dir),
                "restart": "never",  # the nemesis restarts what it kills (a policy would stop a crash loop)
                **({"layout": layout} if layout else {}),
                "services": {
                    "login": {
                        "instances": 1,
                        "http_port": self.http_port,
                        "client_port": 0,
                        "internal_port": 0,
                    },
                    "msg": {"instances": 2, "client_port": 0, "retransmit_timeout": 1.0},
                    "router": {"instances": 2},
                    "biz": {"instances": 1, "auth": AUTH},
                    "file": {"instances": 0},
                    "storage": {"instances": 0},
                    "gateway": {"instances": 0},
                },
                "drain_timeout": 1.0,
            }
        )
        self.sup = ProcessSupervisor(self.config, "generated.teamtalk", console=lambda _s: None)
        self.devices: list[Device] = []
        self.kills: list[Kill] = []
        self.unread: dict[int, dict[tuple[int, int], int]] = {}  # per user, per conversation, at the end
        self.stop = asyncio.Event()
        self.sending = asyncio.Event()
        self.zero_retries = 0  # msg id 0 answers to a message whose earlier attempt had an unknown outcome

    @property
    def login_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/msg_server"

    async def seed(self) -> None:
        """Users chaos00.. and groups of GROUP_SIZE; each device's peer is the next user."""
        digest = PasswordHasher(**AUTH).hash_wire(wire_password(PASSWORD))
        storage = SqliteStorage(self.data_dir)
        await storage.open()
        try:
            ids = []
            for i in range(self.n):
                name = f"chaos{i:03d}"
                user = await storage.get_user_by_login(name)
                if user is None:
                    new = NewUser(login_name=name, nick=name, password_hash=digest)
                    user = await storage.create_user(new)
                ids.append(user.id)
            groups = {}
            for start in range(0, self.n, GROUP_SIZE):
                members = ids[start : start + GROUP_SIZE]
                g = await storage.create_group(
                    members[0], f"g{start}", GroupType.NORMAL, members, by_admin=True
                )
                for uid in members:
                    groups[uid] = g.id
        finally:
            await storage.close()
        self.devices = [
            Device(f"chaos{i:03d}", uid, ids[(i + 1) % self.n], groups[uid]) for i, uid in enumerate(ids)
        ]

    # a device --------------------------------------------------------------------------------------------
    async def device_loop(self, d: Device) -> None:
        number = 0
        pending: Sent | None = None
        while not self.stop.is_set():
            core = ClientCore(REGISTRY, login_url=self.login_url, reconnect=False, default_timeout=3.0)
            reader: asyncio.Task[None] | None = None
            try:
                await core.connect()
                res: Any = await core.call(
                    "CID_LOGIN_REQ_USERLOGIN",
                    _cls["CID_LOGIN_REQ_USERLOGIN"](
                        user_name=d.name, password=wire_password(PASSWORD), online_status=1, client_type=PC
                    ),
                )
                if res.result_code != 0:
                    raise ConnectionError(f"login refused: {res.result_code} {res.result_string}")
                d.logins += 1
                reader = asyncio.create_task(self._read(core, d))
                await self._sync(core, d)
                await self.sending.wait()
                while not self.stop.is_set():
                    if pending is None:
                        number += 1
                        group = number % GROUP_EVERY == 0
                        pending = Sent(
                            GROUP if group else SINGLE,
                            d.group if group else d.peer,
                            number,
                            f"{d.user_id}:{number}".encode(),
                        )
                        d.sent.append(pending)
                    await self._send(core, d, pending)
                    pending = None
                    await asyncio.sleep(self.random.expovariate(self.rate))
            except Exception:  # the link died, the server is down or slow: back off, reconnect, go on
                if pending is not None and pending.attempts:
                    pending.uncertain = True  # sent, unanswered: stored or not, nobody knows yet
                await asyncio.sleep(0.2 + self.random.random() * 0.5)
            finally:
                if reader is not None:
                    reader.cancel()
                with contextlib.suppress(Exception):
                    await core.close()

    async def _send(self, core: ClientCore, d: Device, s: Sent) -> None:
        """Send `s` (its number as the client msg id) until it is acked, refused, or the run stops.

        A msg id 0 answers "not stored by this request". To a first attempt it is a refusal (the msg server
        acks 0 only when it knows nothing was stored). After an attempt whose outcome is unknown it is not:
        that attempt may have been stored (biz killed between its commit and its answer), so the message is
        sent again with the same client msg id (biz answers a stored one with its id) until an ack says so;
        one still unanswered when the run stops is reported as unknown, never as refused."""
        while True:
            s.attempts += 1
            ack: Any = await core.call(
                "CID_MSG_DATA",
                _cls["CID_MSG_DATA"](
                    from_user_id=d.user_id,
                    to_session_id=s.session_id,
                    msg_id=s.number,
                    create_time=0,
                    msg_type=0x11 if s.session_type == GROUP else 0x01,
                    msg_data=s.text,
                ),
            )
            if ack.msg_id or not s.uncertain:
                break
            self.zero_retries += 1
            if self.stop.is_set():
                return  # unknown: neither acked nor refused
            await asyncio.sleep(0.2 + self.random.random() * 0.3)
        if ack.msg_id:
            s.acked = int(ack.msg_id)
            d.ack_times.append(time.monotonic())
            if s.session_type == GROUP:
                conv = (GROUP, s.session_id)
                d.note(conv, s.acked)
                d.own_last[conv] = max(d.own_last[conv], s.acked)
        else:
            s.refused = True

    async def _read(self, core: ClientCore, d: Device) -> None:
        async for info, msg in core.pushes():
            if info.name != "CID_MSG_DATA":
                continue
            group = bool(msg.msg_type & 0x10)
            conv = (GROUP, msg.to_session_id) if group else (SINGLE, msg.from_user_id)
            if msg.msg_id not in d.seen[conv]:
                d.by_push += 1
            d.seen[conv][msg.msg_id] = bytes(msg.msg_data)
            d.note(conv, msg.msg_id)
            with contextlib.suppress(Exception):
                await core.send(
                    "CID_MSG_DATA_ACK",
                    _cls["CID_MSG_DATA_ACK"](
                        user_id=d.user_id,
                        msg_id=msg.msg_id,
                        session_type=GROUP if group else SINGLE,
                        session_id=msg.to_session_id if group else msg.from_user_id,
                    ),
                )

    async def _sync(self, core: ClientCore, d: Device) -> None:
        """Fetch what arrived while away: history pages from the newest down to the first id not seen yet."""
        sources = {(GROUP, d.group)}
        sources |= {(SINGLE, other.user_id) for other in self.devices if other.peer == d.user_id}
        for conv in sources:
            stype, sid = conv
            begin = 0
            while True:
                page: Any = await core.call(
                    "CID_MSG_LIST_REQUEST",
                    _cls["CID_MSG_LIST_REQUEST"](
                        user_id=0, session_type=stype, session_id=sid, msg_id_begin=begin, msg_cnt=100
                    ),
                )
                seen = d.seen[conv]
                for m in page.msg_list:
                    d.note(conv, m.msg_id)
                    if m.from_session_id == d.user_id:  # the device's own message
                        d.own_last[conv] = max(d.own_last[conv], m.msg_id)
                        continue
                    if m.msg_id not in seen:
                        d.by_sync += 1
                    seen[m.msg_id] = bytes(m.msg_data)
                ids = [m.msg_id for m in page.msg_list]
                if not ids or min(ids) <= d.mark[conv] + 1:
                    break
                begin = min(ids) - 1

    # the nemesis -------------------------------------------------------------------------------------------
    async def nemesis(self) -> None:
        await self.sending.wait()
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.random.uniform(0.5, 1.5) * self.kill_every)
            if self.stop.is_set():
                return
            live = [
                w
                for w in self.sup.workers
                if set(roles_of(w)) & set(VICTIMS) and w.process.returncode is None
            ]
            if not live:
                continue
            if self.cycle:
                kind = VICTIMS[len(self.kills) % len(VICTIMS)]
            else:
                kind = self.random.choice(sorted({r for w in live for r in roles_of(w) if r in VICTIMS}))
            live = [w for w in live if kind in roles_of(w)] or live
            victim = self.random.choice(live)
            if kind not in roles_of(victim):
                kind = roles_of(victim)[0]
            kill = Kill(kind, victim.instance, time.monotonic(), roles=roles_of(victim))
            self.kills.append(kill)
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim.process.pid, signal.SIGKILL)
            await victim.process.wait()
            await asyncio.sleep(self.random.uniform(0.2, 1.0))
            await self.sup.restart(victim.service, victim.instance)
            kill.restarted_at = time.monotonic()

    # the run and the check ---------------------------------------------------------------------------------
    def acked(self) -> int:
        return sum(1 for d in self.devices for s in d.sent if s.acked)

    async def run(self, duration: float, min_acked: int = 0, max_duration: float = 0.0) -> dict[str, Any]:
        """Traffic and kills for `duration` seconds, then on (up to `max_duration` in all) until `min_acked`
        messages were acked: a loaded machine slows the traffic, not what the run covers."""
        await self.seed()
        await self.sup.start()
        started = time.monotonic()
        try:
            tasks = [asyncio.create_task(self.device_loop(d)) for d in self.devices]
            tasks.append(asyncio.create_task(self.nemesis()))
            await asyncio.sleep(1.0)  # let every device log in first
            self.sending.set()
            t0 = time.monotonic()
            await asyncio.sleep(duration)
            while self.acked() < min_acked and time.monotonic() - t0 < max_duration:
                await asyncio.sleep(0.5)
            self.stop.set()
            await asyncio.wait(tasks, timeout=30)
            elapsed = time.monotonic() - t0
            for w in self.sup.workers:  # anything the nemesis left down comes back for the final sync
                if w.process.returncode is not None:
                    await self.sup.restart(w.service, w.instance)
            await self.final_sync()
            report = self.check()
            report.update(duration_s=round(elapsed, 1), wall_s=round(time.monotonic() - started, 1))
            return report
        finally:
            await self.sup.stop()

    async def final_sync(self) -> None:
        """Every device logs in once more, syncs, and reads its unread counts."""
        for d in self.devices:
            for attempt in range(20):
                core = ClientCore(REGISTRY, login_url=self.login_url, reconnect=False, default_timeout=5.0)
                try:
                    await core.connect()
                    await core.call(
                        "CID_LOGIN_REQ_USERLOGIN",
                        _cls["CID_LOGIN_REQ_USERLOGIN"](
                            user_name=d.name,
                            password=wire_password(PASSWORD),
                            online_status=1,
                            client_type=PC,
                        ),
                    )
                    await self._sync(core, d)
                    rsp: Any = await core.call(
                        "CID_MSG_UNREAD_CNT_REQUEST", _cls["CID_MSG_UNREAD_CNT_REQUEST"](user_id=0)
                    )
                    self.unread[d.user_id] = {
                        (u.session_type, u.session_id): u.unread_cnt for u in rsp.unreadinfo_list
                    }
                    break
                except Exception:
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.5)
                finally:
                    with contextlib.suppress(Exception):
                        await core.close()

    def check(self) -> dict[str, Any]:
        members: dict[int, list[Device]] = defaultdict(list)
        for d in self.devices:
            members[d.group].append(d)
        by_id = {d.user_id: d for d in self.devices}
        lost = duplicated = reordered = phantom = unread_bad = 0
        acked = refused = attempts = unknown = unknown_stored = 0
        examples: list[str] = []
        for d in self.devices:
            for s in d.sent:
                attempts += s.attempts
                acked += bool(s.acked)
                refused += s.refused
                recipients = (
                    [by_id[s.session_id]]
                    if s.session_type == SINGLE
                    else [m for m in members[s.session_id] if m is not d]
                )
                conv = (SINGLE, d.user_id) if s.session_type == SINGLE else (GROUP, s.session_id)
                if not s.acked and not s.refused:
                    # Its sender never heard (the run stopped first): stored or not, both are honest; a
                    # stored one must still be delivered once, in order (the checks below see it).
                    unknown += 1
                    unknown_stored += any(s.text in r.seen[conv].values() for r in recipients)
                for r in recipients:
                    got = r.seen[conv]
                    if s.acked and s.acked not in got:
                        lost += 1
                        if len(examples) < 5:
                            examples.append(f"lost: {d.name} #{s.number} (msg id {s.acked}) to {r.name}")
                    if s.refused and s.text in got.values():
                        phantom += 1
        for r in self.devices:
            for (stype, sid), got in r.seen.items():
                # Per sender: the numbers in msg-id order must rise, each stored once.
                per_sender: dict[str, list[int]] = defaultdict(list)
                for _mid, text in sorted(got.items()):
                    sender, _, number = text.decode().partition(":")
                    per_sender[sender].append(int(number))
                for sender, numbers in per_sender.items():
                    duplicated += len(numbers) - len(set(numbers))
                    if numbers != sorted(set(numbers)) and len(numbers) == len(set(numbers)):
                        reordered += 1
                        if len(examples) < 5:
                            examples.append(f"reordered: {sender} -> {r.name} in {stype}:{sid}")
                # Nothing is read here, but sending to a group reads it (as in TeamTalk): unread are the
                # others' messages after the device's own newest one.
                stored = sum(1 for mid in got if mid > r.own_last[(stype, sid)])
                counted = self.unread.get(r.user_id, {}).get((stype, sid), 0)
                if counted != stored:
                    unread_bad += 1
                    if len(examples) < 5:
                        examples.append(f"unread: {r.name} {stype}:{sid} counts {counted}, stored {stored}")
        sent = sum(len(d.sent) for d in self.devices)
        delivered_push = sum(d.by_push for d in self.devices)
        delivered_sync = sum(d.by_sync for d in self.devices)
        recovery: dict[str, list[float]] = defaultdict(list)
        for k in self.kills:
            # Until every device has had an ack again after the kill: the slowest device's wait (devices
            # the kill did not touch answer at once; the ones it cut off reconnect and resend first).
            waits = [next((t - k.at for t in d.ack_times if t > k.at), None) for d in self.devices]
            known = [w for w in waits if w is not None]
            if known and k.restarted_at:
                recovery[k.service].append(max(known))
        kills = defaultdict(int)
        for k in self.kills:
            for role in k.roles or (k.service,):
                kills[role] += 1
        return {
            "devices": self.n,
            "sent": sent,
            "acked": acked,
            "refused": refused,
            "unknown": unknown,
            "unknown_stored": unknown_stored,
            "send_attempts": attempts,
            "zero_ack_retries": self.zero_retries,
            "logins": sum(d.logins for d in self.devices),
            "delivered_by_push": delivered_push,
            "delivered_by_sync": delivered_sync,
            "lost": lost,
            "duplicated": duplicated,
            "reordered": reordered,
            "phantom": phantom,
            "unread_mismatch": unread_bad,
            "kills": dict(sorted(kills.items())),
            "recovery_s": {
                svc: {"p50": round(statistics.median(v), 2), "p99": round(_p99(v), 2), "n": len(v)}
                for svc, v in sorted(recovery.items())
            },
            "examples": examples,
        }


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def passed(report: dict[str, Any]) -> bool:
    """Whether the run kept every promise."""
    return not any(report[k] for k in ("lost", "duplicated", "reordered", "phantom", "unread_mismatch"))


async def run_chaos(
    *,
    duration: float,
    devices: int,
    rate: float,
    kill_every: float,
    seed: int,
    data_dir: Path | None = None,
    cycle: bool = False,
    layout: str | None = None,
    min_acked: int = 0,
    max_duration: float = 0.0,
) -> dict[str, Any]:
    """One chaos run in `data_dir` (a temporary folder when None); returns the report. With `min_acked`, the
    run goes on after `duration` (up to `max_duration` seconds in all) until that many messages were acked."""
    if data_dir is not None:
        chaos = Chaos(data_dir, devices, rate, kill_every, seed, cycle, layout)
        return await chaos.run(duration, min_acked, max_duration)
    with tempfile.TemporaryDirectory(prefix="ttgen-chaos-") as tmp:
        chaos = Chaos(Path(tmp), devices, rate, kill_every, seed, cycle, layout)
        return await chaos.run(duration, min_acked, max_duration)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of traffic and kills (default 60)")
    ap.add_argument("--devices", type=int, default=20, help="simulated PC clients (default 20)")
    ap.add_argument("--rate", type=float, default=10.0, help="messages per second per device (default 10)")
    ap.add_argument("--kill-every", type=float, default=5.0, help="mean seconds between kills (default 5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--layout", choices=["sharded", "split"], help="the cluster's (default: the config's)")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    from runtime.transport import install_event_loop_policy

    install_event_loop_policy()
    report = asyncio.run(
        run_chaos(
            duration=args.duration,
            devices=args.devices,
            rate=args.rate,
            kill_every=args.kill_every,
            seed=args.seed,
            layout=args.layout,
        )
    )
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    ok = passed(report)
    print("chaos: PASS (0 lost, 0 duplicated, 0 reordered)" if ok else "chaos: FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""CLI layer: the `ttgen up --demo` script: demo users on first run, then a conversation through real clients.

Everything goes through the running cluster the way a TeamTalk client would: `GET /msg_server` on the login
service, TCP to the chosen msg server, login with MD5hex(password), then 1:1 and group messages whose acks
carry the durable msg ids. Users may land on different msg servers, so the routers relay between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from runtime.auth import HashPolicy, cluster_hash_policy
from runtime.client import ClientCore
from runtime.cluster.config import ClusterConfig
from runtime.cluster.discovery import RunDirDiscovery
from runtime.errors import RuntimeProtocolError
from runtime.storage import Conflict, GroupType, NewUser, Storage
from ttgen.commands.chat import ChatSession, Target
from ttgen.commands.up import page_address
from ttgen.stack import Stack

DEMO_PASSWORD = "demo"
DEMO_USERS = (("alice", "Alice Liddell"), ("bob", "Bob Builder"), ("carol", "Carol Danvers"))
DEMO_DEPARTMENT = "Engineering"
DEMO_GROUP = "team"
STEP_TIMEOUT = 15.0


async def seed_demo_data(
    storage: Storage, say: Callable[[str], None], policy: HashPolicy | None = None
) -> bool:
    """Create the demo department, users and group unless they exist; True if anything was created.
    Passwords are hashed with `policy` (the cluster's `biz.auth`), so the first login does not re-hash."""
    from runtime.auth import PasswordHasher

    if await storage.get_user_by_login(DEMO_USERS[0][0]) is not None:
        return False
    depts = [d for d in await storage.list_departments_since(0) if d.name == DEMO_DEPARTMENT]
    dept = depts[0] if depts else await storage.create_department(DEMO_DEPARTMENT)
    hashed = await asyncio.to_thread(PasswordHasher(policy=policy).hash_plaintext, DEMO_PASSWORD)
    ids = []
    for login, nick in DEMO_USERS:
        with contextlib.suppress(Conflict):
            await storage.create_user(
                NewUser(
                    login_name=login,
                    nick=nick,
                    real_name=nick,
                    domain=login,
                    department_id=dept.id,
                    password_hash=hashed,
                )
            )
        user = await storage.get_user_by_login(login)
        assert user is not None
        ids.append(user.id)
    await storage.create_group(ids[0], DEMO_GROUP, GroupType.NORMAL, ids, by_admin=True)
    say(
        f"demo: created department {DEMO_DEPARTMENT}, users {', '.join(u for u, _ in DEMO_USERS)} "
        f"(password '{DEMO_PASSWORD}') and group #{DEMO_GROUP}"
    )
    return True


def login_url(config: ClusterConfig) -> str:
    """The login service's `/msg_server` URL from the run dir."""
    found = RunDirDiscovery(config.run_dir).endpoints("login", "http")
    if not found:
        raise RuntimeError("no login service is running (its http endpoint is not published)")
    return f"http://{found[0].host}:{found[0].port}/msg_server"


async def _login(stack: Stack, url: str, user: str, say: Callable[[str], None]) -> ChatSession:
    session = ChatSession(
        stack,
        ClientCore(stack.registry, login_url=url, reconnect=False),
        lambda line: say(f"    [{user}'s screen] {line}"),
    )
    await session.login(user, DEMO_PASSWORD)
    where = f"{session.core.host}:{session.core.port}"
    say(f"  {user} logged in (user id {session.user_id}) on msg server {where}")
    return session


async def _send(
    sender: ChatSession, to: Target, text: str, receivers: list[ChatSession], say: Callable[[str], None]
) -> None:
    msg_id = await sender.send(to, text)
    say(f'  {sender.name} -> {to.label}: "{text}"   acked by the server: stored as msg {msg_id}')
    for receiver in receivers:
        who, _, got_id = await receiver.wait_received(text, STEP_TIMEOUT)
        say(f"  {receiver.name} received it from {who} (msg {got_id}) and acked it")


async def run_demo(config: ClusterConfig, stack: Stack, *, say: Callable[[str], None]) -> bool:
    """Seed demo data if needed and run the scripted conversation; True if every step succeeded."""
    from ttgen.commands.admin import open_cluster_storage

    storage = await open_cluster_storage(config)
    try:
        await seed_demo_data(storage, say, cluster_hash_policy(config.as_dict()))
    finally:
        await storage.close()
    url = login_url(config)
    say("")
    say(f"demo: three clients log in through the login service ({url})")
    sessions: list[ChatSession] = []
    try:
        for user, _ in DEMO_USERS:
            sessions.append(await _login(stack, url, user, say))
        alice, bob, carol = sessions
        say("")
        say("demo: a 1:1 conversation (store, ack with the durable msg id, deliver, client ack)")
        await _send(alice, alice.target("bob", group=False), "Hi Bob! Is the new cluster up?", [bob], say)
        await _send(
            bob, bob.target("alice", group=False), "Yes: two msg servers, two routers, SQLite.", [alice], say
        )
        say("")
        say(f"demo: a group message to #{DEMO_GROUP} (fan-out to every member, across msg servers)")
        await _send(
            carol, carol.target(DEMO_GROUP, group=True), "Stand-up in 5 minutes, everyone!", [alice, bob], say
        )
        say("")
        say("demo: alice reads her history with bob (what an offline client pulls on reconnect)")
        for msg_id, sender, text in await alice.history(alice.target("bob", group=False), 10):
            say(f"  msg {msg_id}: {sender}: {text}")
        presence = await alice.who()
        say("demo: presence seen by alice: " + ", ".join(f"{u} {s}" for u, s in presence))
        say("")
        say("demo: conversation complete")
        return True
    except (TimeoutError, ConnectionError, OSError, RuntimeError, RuntimeProtocolError) as exc:
        say(f"demo: step failed: {type(exc).__name__}: {exc}")
        return False
    finally:
        for session in sessions:
            await session.close()


def program_name() -> str:
    """How to invoke ttgen from the current directory: `ttgen` if it is on PATH, else its path (`./dev demo`
    runs `.venv/bin/ttgen`, which a fresh shell does not find)."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "ttgen"
    on_path = shutil.which("ttgen")
    if Path(argv0).name != "ttgen" or (on_path and Path(on_path).resolve() == Path(argv0).resolve()):
        return "ttgen"
    relative, absolute = os.path.relpath(argv0), os.path.abspath(argv0)
    return relative if len(relative) <= len(absolute) else absolute


def page_url(config: ClusterConfig) -> str:
    """The chat page's address: the gateway's HTTP endpoint from the run dir ("" when no gateway runs). A
    gateway listening on every interface is shown at 127.0.0.1, where this machine's browser reaches it."""
    return page_address(RunDirDiscovery(config.run_dir).endpoints("gateway", "http"))


def join_hint(config: ClusterConfig, default_data_dir: bool) -> str:
    """How a person joins the running demo: the chat page in a browser, or the terminal client."""
    where = "" if default_data_dir else f" --data-dir {config.data_dir}"
    url = page_url(config)
    page = (
        f"demo: open the chat page in a browser: {url}\n"
        f"      (log in as alice, bob or carol, password {DEMO_PASSWORD})\n"
        if url
        else ""
    )
    return (
        f"{page}"
        f"demo: join the chat from another terminal:\n"
        f"        {program_name()} chat --user alice --password {DEMO_PASSWORD}{where}\n"
        f"      (or bob, or carol; type /help once logged in)"
    )

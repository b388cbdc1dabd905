"""Runtime fuzz layer: the real cluster (login, msg, router, biz, SQLite) in process, as a live fuzz target.

It runs in a background event-loop thread so the blocking fuzz client and hypothesis drive it from the main
thread. Users are seeded before start; fuzz connections log in as `fuzz`, the bystander as `bystander`.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from runtime.fuzz.stack import FuzzStack
from runtime.fuzz.targets import LoopThread, Target
from runtime.fuzz.wire import NoAnswer, PeerClosed, RawConnection
from runtime.plugins import plugins_for
from runtime.registry import CommandInfo
from runtime.storage.sqlite.readers import database_digest

PASSWORD = "fuzz-secret"
AUTH = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}  # cheap argon2: seeding and login stay fast
USERS = ("fuzz", "bystander", "peer", "alice", "bob", "carol")
PC_CLIENT = 0x01
MOBILE_CLIENT = 0x11
ONLINE = 1
LOGIN_COMMAND = "CID_LOGIN_REQ_USERLOGIN"
SETTLE_SEQ = 0x0BAC


def cluster_supports(stack: FuzzStack) -> bool:
    """Whether the runtime's services implement this stack's protocol (TeamTalk's login and message flow)."""
    try:
        login = stack.command(LOGIN_COMMAND)
        stack.command("CID_MSG_DATA")
    except LookupError:
        return False
    fields = login.message_class.DESCRIPTOR.fields_by_name
    servers = stack.servers
    return (
        "user_name" in fields
        and "password" in fields
        and servers is not None
        and hasattr(servers, "MsgServiceBase")
    )


def md5hex(text: str) -> str:
    """What TeamTalk clients send as the password."""
    return hashlib.md5(text.encode()).hexdigest()


def cluster_config(
    data_dir: Path, plant_command: str | None = None, plugins: list[str] | None = None
) -> dict[str, Any]:
    """One login, msg, router and biz instance on port 0 with SQLite (the smallest complete cluster), with
    `plugins` enabled (the stack's plugin commands are fuzzed like the others only if their handlers run)."""
    msg: dict[str, Any] = {"instances": 1, "client_port": 0, "retransmit_timeout": 2.0, "max_attempts": 3}
    if plant_command:
        msg.update({"class": "runtime.fuzz.plant:PlantedMsgService", "fuzz_plant_command": plant_command})
    return {
        "data_dir": str(data_dir),
        "storage": {"backend": "sqlite", "encrypt_at_rest": True},
        "services": {
            "login": {"instances": 1, "http_port": 0, "client_port": 0, "internal_port": 0},
            "msg": msg,
            "router": {"instances": 1},
            "biz": {
                "instances": 1,
                "auth": {**AUTH, "max_user_failures": 1000, "max_address_failures": 1000},
            },
            "file": {"instances": 0},
            "storage": {"instances": 0},
            "gateway": {"instances": 0},
        },
        "plugins": list(plugins or ()),
        "drain_timeout": 1.0,
    }


async def seed_users(data_dir: Path, names: tuple[str, ...]) -> dict[str, int]:
    """Create the fuzz users before the cluster starts; returns name -> user id."""
    from runtime.auth import HashPolicy, PasswordHasher
    from runtime.storage import NewUser
    from runtime.storage.sqlite import SqliteStorage

    digest = PasswordHasher(policy=HashPolicy.from_config(AUTH)).hash_wire(md5hex(PASSWORD))
    storage = SqliteStorage(data_dir, encrypt_at_rest=True)
    await storage.open()
    try:
        ids = {}
        for name in names:
            user = await storage.get_user_by_login(name)
            if user is None:
                user = await storage.create_user(NewUser(login_name=name, nick=name, password_hash=digest))
            ids[name] = user.id
        return ids
    finally:
        await storage.close()


class ClusterTarget(Target):
    """The in-process cluster; fuzz frames go to its msg server's client port."""

    name = "cluster"
    serves = frozenset({"msg"})
    # The generated registry carries each command's field constraints as `input.fields`, so the cluster's
    # input stages refuse violating input: the oracle predicts those refusals and checks storage is unchanged.
    enforces_limits = True

    def __init__(self, stack: FuzzStack, *, plant_command: str | None = None, timeout: float = 3.0) -> None:
        from runtime.cluster.config import parse_config
        from runtime.cluster.runner import ClusterRunner

        self.data_dir = Path(tempfile.mkdtemp(prefix="ttgen-fuzz-"))
        self.loop = LoopThread()
        self.users = self.loop.run(seed_users(self.data_dir, USERS))
        self.fuzz_user_id = self.users["fuzz"]
        plugins = plugins_for(info.name for info in stack.registry)
        config = parse_config(cluster_config(self.data_dir, plant_command, plugins))
        self.runner = ClusterRunner(config, stack.registry, stack.servers, console=lambda _line: None)
        try:
            self.loop.run(self.runner.start(), timeout=60.0)
            self._wait_ready(15.0)
        except BaseException:
            self.loop.stop()
            raise
        msg = self.runner.local["msg"][0]
        host, port = msg.endpoints()[0].address
        super().__init__(stack, host, port, timeout=timeout)
        self.reply_timeout = 1.0
        self._login_as = "fuzz"
        self._client_type = PC_CLIENT

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.loop.call(self._ready):
            if time.monotonic() > deadline:
                raise TimeoutError("fuzz cluster did not become ready")
            time.sleep(0.02)  # polling the cluster's own health, not synchronizing a test

    def _ready(self) -> bool:
        msgs = self.runner.local.get("msg", [])
        logins = self.runner.local.get("login", [])
        ok = bool(msgs) and all(s.health()["status"] == "ok" for s in msgs)
        return ok and bool(logins) and len(logins[0].servers) == len(msgs)

    def login_message(self) -> tuple[CommandInfo, Message] | None:
        info = self.stack.command(LOGIN_COMMAND)
        msg = info.message_class(
            user_name=self._login_as,
            password=md5hex(PASSWORD),
            online_status=ONLINE,
            client_type=self._client_type,
        )
        return info, msg

    def login(self, conn: RawConnection) -> None:
        super().login(conn)

    def login_as(self, conn: RawConnection, user: str, client_type: int = PC_CLIENT) -> None:
        """Log `conn` in as one of the seeded users (as a PC client unless told otherwise)."""
        self._login_as, self._client_type = user, client_type
        try:
            self.login(conn)
        finally:
            self._login_as, self._client_type = "fuzz", PC_CLIENT

    def check_login_reply(self, reply: Message) -> None:
        code = getattr(reply, "result_code", 0)
        assert code == 0, f"fuzz login refused: result {code} {getattr(reply, 'result_string', '')!r}"

    def bystander(self) -> RawConnection:
        if self._bystander is None or self._bystander.closed:
            conn = self.connect()
            self.login_as(conn, "bystander")
            self._bystander = conn
        return self._bystander

    def settle(self, conn: RawConnection) -> None:
        """A round trip through biz (an unread-count request on the bystander connection), so writes queued
        by earlier examples land before a digest is taken."""
        conn = self.bystander()
        info = self.stack.command("CID_MSG_UNREAD_CNT_REQUEST")
        reply = self.stack.command(info.reply or info.name)
        body = info.message_class(user_id=self.fuzz_user_id).SerializeToString()
        conn.send_frame(info.service_id, info.command_id, SETTLE_SEQ, body)
        try:
            conn.wait_for(lambda f: f.command_id == reply.command_id and f.seq == SETTLE_SEQ)
        except (PeerClosed, NoAnswer):
            conn.close()  # check_bystander reports it; settling is best effort

    def storage_digest(self) -> str:
        """SHA-256 over every row of every table of the SQLite database (read-only snapshot)."""
        return database_digest(self.data_dir / "ttgen.db")

    def close(self) -> None:
        super().close()
        try:
            self.loop.run(self.runner.stop(), timeout=30.0)
        finally:
            self.loop.stop()
            shutil.rmtree(self.data_dir, ignore_errors=True)

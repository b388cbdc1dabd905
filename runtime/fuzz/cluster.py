"""Runtime fuzz layer: the real cluster (login, msg, router, biz, SQLite) in process, as a live fuzz target.

It runs in a background event-loop thread so the blocking fuzz client and hypothesis drive it from the main
thread. Users are seeded before start; fuzz connections log in as `fuzz`, the bystander as `bystander`.
Accounts whose login names have the boundary lengths of the login message's `user_name` (1, 2, the limit
minus one and the limit) are seeded for the authentication properties, and casts of fresh users for the
stateful models: every stateful example gets a cast of its own, so nothing an earlier example stored (unread
counts, message ids, group memberships, dedup windows) can change what a later one (or hypothesis' replay of
it while shrinking) sees. When the casts run out the cluster restarts on a fresh database.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, cast

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
CAST_SIZE = 3  # users per stateful example (the models' alice, bob and carol)
CASTS = 48  # casts seeded per database (the cluster restarts on a fresh one when they run out)
NAME_LIMIT = 64  # the login name length limit when the spec sets none
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
    data_dir: Path,
    plant_command: str | None = None,
    plugins: list[str] | None = None,
    *,
    plant: str | None = None,
    name_limit: int = NAME_LIMIT,
) -> dict[str, Any]:
    """One login, msg, router and biz instance on port 0 with SQLite (the smallest complete cluster), with
    `plugins` enabled (the stack's plugin commands are fuzzed like the others only if their handlers run).
    `plant` (test-only) plants a known bug: in `plant_command`'s handler (`handler`, `raise`), the client
    port's decoder (`frame_max`), or biz (`auth`, `authz`)."""
    msg: dict[str, Any] = {"instances": 1, "client_port": 0, "retransmit_timeout": 2.0, "max_attempts": 3}
    biz: dict[str, Any] = {
        "instances": 1,
        # No lockout while fuzzing: the authentication properties fail logins by the thousand.
        "auth": {**AUTH, "max_user_failures": 10**9, "max_address_failures": 10**9},
    }
    if plant_command and plant is None:
        plant = "handler"
    if plant in ("handler", "raise", "frame_max"):
        msg.update({"class": "runtime.fuzz.plant:PlantedMsgService", "fuzz_plant": plant})
        if plant_command:
            msg["fuzz_plant_command"] = plant_command
    elif plant in ("auth", "authz"):
        biz.update(
            {
                "class": "runtime.fuzz.plant:PlantedBizService",
                "fuzz_plant": plant,
                "fuzz_plant_name_len": name_limit,
            }
        )
    return {
        "data_dir": str(data_dir),
        "storage": {"backend": "sqlite", "encrypt_at_rest": True},
        "services": {
            "login": {"instances": 1, "http_port": 0, "client_port": 0, "internal_port": 0},
            "msg": msg,
            "router": {"instances": 1},
            "biz": biz,
            "file": {"instances": 0},
            "storage": {"instances": 0},
            "gateway": {"instances": 0},
        },
        "plugins": list(plugins or ()),
        "drain_timeout": 1.0,
    }


async def seed_users(data_dir: Path, names: tuple[str, ...]) -> dict[str, int]:
    """Create the fuzz users before the cluster starts (all with password `PASSWORD`); returns name -> id."""
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


def boundary_names(limit: int) -> tuple[str, ...]:
    """Login names of the boundary lengths of a `limit`-character name field: 1, 2, limit-1 and limit."""
    lengths = sorted({n for n in (1, 2, limit - 1, limit) if n >= 1})
    return tuple((chr(ord("k") + i) * n) for i, n in enumerate(lengths))


def name_limit(stack: FuzzStack) -> int:
    """The spec's max_len of the login message's `user_name` (NAME_LIMIT if it sets none)."""
    limits = stack.field_limits.get(stack.message_of(LOGIN_COMMAND), {})
    return int(limits.get("user_name", {}).get("max_len") or NAME_LIMIT)


def cast_names(index: int) -> tuple[str, ...]:
    """The login names of stateful cast `index`."""
    return tuple(f"cast{index}-{role}" for role in range(CAST_SIZE))


class ClusterTarget(Target):
    """The in-process cluster; fuzz frames go to its msg server's client port."""

    name = "cluster"
    serves = frozenset({"msg"})
    # The generated registry carries each command's field constraints as `input.fields`, so the cluster's
    # input stages refuse violating input: the oracle predicts those refusals and checks storage is unchanged.
    enforces_limits = True
    # Every valid request with a reply command is answered (fuzzing found none that is not: a silent one is
    # a handler that failed or a lost reply).
    answers_valid_requests = True
    handler_loggers = ("runtime.dispatch",)

    def __init__(
        self,
        stack: FuzzStack,
        *,
        plant_command: str | None = None,
        plant: str | None = None,
        timeout: float = 3.0,
    ) -> None:
        self.loop = LoopThread()
        self.stack = stack
        self.plant = plant if plant is not None else ("handler" if plant_command else None)
        self.plant_command = plant_command
        self.name_limit = name_limit(stack)
        self.auth_names = boundary_names(self.name_limit)
        self.data_dir = Path(tempfile.mkdtemp(prefix="ttgen-fuzz-"))
        try:
            self._start()
        except BaseException:
            self.loop.stop()
            raise
        super().__init__(stack, self._host, self._port, timeout=timeout)
        self.reply_timeout = 1.0
        self._login_as = "fuzz"
        enums = stack.enums
        self.pc_client = int(enums.ClientType.CLIENT_TYPE_WINDOWS)
        self.mobile_client = int(enums.ClientType.CLIENT_TYPE_IOS)
        self.online = int(enums.UserStatType.USER_STATUS_ONLINE)
        self._client_type = self.pc_client
        self.restarts = 0

    def _start(self) -> None:
        """Seed a fresh database and start the cluster on it."""
        from runtime.cluster.config import parse_config
        from runtime.cluster.runner import ClusterRunner

        names = USERS + self.auth_names + tuple(n for i in range(CASTS) for n in cast_names(i))
        self.users = self.loop.run(seed_users(self.data_dir, names), timeout=120.0)
        self.fuzz_user_id = self.users["fuzz"]
        self._next_cast = 0
        plugins = plugins_for(info.name for info in self.stack.registry)
        config = parse_config(
            cluster_config(
                self.data_dir, self.plant_command, plugins, plant=self.plant, name_limit=self.name_limit
            )
        )
        self.runner = ClusterRunner(
            config, self.stack.registry, self.stack.servers, console=lambda _line: None
        )
        self.loop.run(self.runner.start(), timeout=60.0)
        self._wait_ready(15.0)
        msg = self.runner.local["msg"][0]
        self._host, self._port = msg.endpoints()[0].address

    def cast(self) -> dict[str, int]:
        """Login name -> user id of a cast of users no earlier example used (restarting the cluster on a
        fresh database when every seeded cast is spent)."""
        if self._next_cast >= CASTS:
            self.restart()
        names = cast_names(self._next_cast)
        self._next_cast += 1
        return {name: self.users[name] for name in names}

    def restart(self) -> None:
        """Stop the cluster, throw its database away and start again on a freshly seeded one."""
        Target.reset(self)
        self.loop.run(self.runner.stop(), timeout=30.0)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir = Path(tempfile.mkdtemp(prefix="ttgen-fuzz-"))
        self._start()
        self.host, self.port = self._host, self._port
        self.restarts += 1

    def accounts(self) -> dict[str, str]:
        """The boundary-length accounts and the fuzz user, all with the password `PASSWORD`."""
        return {name: PASSWORD for name in (*self.auth_names, "fuzz")}

    def login_request(self, user: str, password: str) -> tuple[CommandInfo, Message]:
        """A TeamTalk login as `user`: the password goes on the wire as its MD5 hex, as TeamTalk clients
        send it, except an empty one, which is sent empty."""
        info = self.stack.command(LOGIN_COMMAND)
        wire = md5hex(password) if password else ""
        login: Any = info.message_class
        msg = login(user_name=user, password=wire, online_status=self.online, client_type=self.pc_client)
        return info, msg

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
        msg = cast(Any, info.message_class)(
            user_name=self._login_as,
            password=md5hex(PASSWORD),
            online_status=self.online,
            client_type=self._client_type,
        )
        return info, msg

    def login(self, conn: RawConnection) -> None:
        super().login(conn)

    def login_as(self, conn: RawConnection, user: str, client_type: int | None = None) -> None:
        """Log `conn` in as one of the seeded users (as a PC client unless told otherwise)."""
        self._login_as, self._client_type = user, self.pc_client if client_type is None else client_type
        try:
            self.login(conn)
        finally:
            self._login_as, self._client_type = "fuzz", self.pc_client

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
        body = cast(Any, info.message_class)(user_id=self.fuzz_user_id).SerializeToString()
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

"""CLI layer: `ttgen chat`, a line-based terminal client for a running cluster (also drivable through a pipe).

`ChatSession` wraps the generated TeamTalk client over `runtime.client.ClientCore`: login (over the secure
session when the server offers it), the directory and group lists (to turn names into ids), 1:1 and group
sends (waiting for the durable msg id), history, unread, presence, files (runtime.client_files), temporary
groups, and a push loop that prints incoming messages, acknowledges them and marks them read (a printed
message is a read one; `/history` marks the session read too, so `/unread` clears). The demo uses it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from runtime.client import ENCRYPTION_MODES, ClientCore
from runtime.client_files import FileTransferError, FileTransfers, OfflineFile
from runtime.client_login import LoginBusy, LoginRefused, SessionLogin
from runtime.cluster.discovery import RunDirDiscovery
from runtime.errors import RuntimeProtocolError
from ttgen.stack import Stack, load_stack

ONLINE, CLIENT_WINDOWS = 1, 1
SINGLE, GROUP = 1, 2
SINGLE_TEXT, GROUP_TEXT = 0x01, 0x11
STATUS_NAMES = {1: "online", 2: "offline", 3: "away"}
GROUP_MODIFY_ADD, GROUP_MODIFY_DEL = 1, 2
GROUP_TYPE_TMP = 2
ACCESS_DENIED = 22  # the result code of a member change the asking user may not make
MAX_SEND_FILE = 64 * 1024 * 1024  # what the chat reads into memory for one /sendfile
HELP = """commands:
  /msg USER text       send a 1:1 message          /group NAME text    send to a group
  /history USER|GROUP  last messages (marks read)  /unread             unread counts
  /read USER|GROUP     mark a session read         /who                who is online
  /users /groups       the directory               /help               this text
  /newgroup NAME USER,USER...   make a temporary group with you and those users
  /invite GROUP USER,USER...    add users to a group (any member of a temporary group)
  /kick GROUP USER,USER...      remove them (the group's creator)
  /sendfile USER PATH  send a file (kept for USER until fetched)
  /files               files waiting for you       /getfile N [DIR]    fetch file N of /files
  /edit MSGID new text replace the text of a message you sent to the last target (within 15 minutes)
  /quit                leave
  text without a command goes to the last /msg or /group target"""


class ChatError(RuntimeError):
    """A chat operation failed (login refused, unknown user or group, a message not acknowledged)."""


@dataclass(frozen=True)
class Target:
    """Where a message goes: a user or a group."""

    session_type: int
    session_id: int
    label: str  # "bob" or "#team"


class ChatSession:
    """One logged-in user: typed calls over the generated client, names resolved to ids."""

    def __init__(self, stack: Stack, core: ClientCore, say: Callable[[str], None]) -> None:
        client_cls = stack.client_class()
        if client_cls is None:
            raise ChatError(f"the stack {stack.name!r} has no generated client")
        self.registry = stack.registry
        self.core = core
        self.client: Any = client_cls(core)
        self.say = say
        self.user_id = 0
        self.name = ""
        self.users: dict[int, Any] = {}  # id -> UserInfo
        self.groups: dict[int, Any] = {}  # id -> GroupInfo
        self._msg_seq = random.randrange(1, 1 << 20)
        self._push_task: asyncio.Task[None] | None = None
        self.received: list[tuple[str, str, int]] = []  # (from label, text, msg id), for scripts and tests
        self._arrived = asyncio.Event()
        self.lost = asyncio.Event()  # set when the session is over (closed, or refused after a reconnect)
        self.auth: SessionLogin | None = None
        self.files = FileTransfers(core)
        self.waiting_files: list[OfflineFile] = []  # the last /files listing, numbered from 1
        self._file_addresses: Any = []
        self.read_acks = 0  # CID_MSG_READ_ACKs sent
        self.extra_groups: set[int] = set()  # temporary groups met in this session (made, joined, messaged)
        self.edits: list[tuple[int, str]] = []  # (msg id, new text) of edit notices received

    def new(self, command: str, **fields: Any) -> Any:
        """A message of the command's type, built from the registry (no generated module named here)."""
        return self.registry.by_name(command).message_class(**fields)

    # -- session ---------------------------------------------------------------------------------------------
    async def login(self, user: str, password: str) -> None:
        """Connect (waiting in the login queue), log in with MD5hex(password) as TeamTalk clients do, take a
        resumption ticket, load the directory, start pushes. After a lost connection the core reconnects and
        `SessionLogin` logs in again with the ticket (no password hashing at the server)."""
        self.auth = SessionLogin(
            self.core,
            user,
            password,
            client_type=CLIENT_WINDOWS,
            online_status=ONLINE,
            client_version="ttgen-chat",
            on_status=lambda line: self.say(f"* {line}"),
        )
        try:
            info = await self.auth.login()
        except (LoginRefused, LoginBusy) as exc:
            raise ChatError(str(exc)) from None
        self.user_id, self.name = info.user_id, user
        await self.refresh()
        self._push_task = asyncio.create_task(self._push_loop(), name="chat-pushes")

    async def refresh(self) -> None:
        """Reload the user directory and this user's groups."""
        rsp = await self.client.buddy_list_all_user_request(
            self.new("CID_BUDDY_LIST_ALL_USER_REQUEST", user_id=self.user_id, latest_update_time=0)
        )
        self.users = {u.user_id: u for u in rsp.user_list}
        normal = await self.client.group_normal_list_request(
            self.new("CID_GROUP_NORMAL_LIST_REQUEST", user_id=self.user_id)
        )
        # Temporary groups are not in the NORMAL list: they are known from the recent sessions, from being
        # made or joined here (a member-change push) and from their messages.
        recent = await self.client.buddy_list_recent_contact_session_request(
            self.new(
                "CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST", user_id=self.user_id, latest_update_time=0
            )
        )
        wanted = {gv.group_id for gv in normal.group_version_list} | self.extra_groups
        wanted |= {c.session_id for c in recent.contact_session_list if c.session_type == GROUP}
        req = self.new("CID_GROUP_INFO_REQUEST", user_id=self.user_id)
        for gid in sorted(wanted)[:500]:
            req.group_version_list.add(group_id=gid, version=0)
        info = await self.client.group_info_request(req) if wanted else None
        mine = [g for g in (info.group_info_list if info else []) if self.user_id in g.group_member_list]
        self.groups = {g.group_id: g for g in mine}

    async def close(self) -> None:
        """Stop the push loop and close the connection."""
        if self.auth is not None:
            self.auth.close()
        if self._push_task is not None:
            self._push_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._push_task
        await self.core.close()

    # -- names -----------------------------------------------------------------------------------------------
    def user_label(self, user_id: int) -> str:
        if user_id == self.user_id:
            return self.name
        u = self.users.get(user_id)
        return (u.user_domain or u.user_nick_name) if u is not None else f"user{user_id}"

    def find_user(self, name: str) -> int:
        for u in self.users.values():
            if name in (u.user_domain, u.user_nick_name, u.user_real_name, str(u.user_id)):
                return int(u.user_id)
        raise ChatError(f"unknown user {name!r} (try /users)")

    def find_group(self, name: str) -> int:
        for g in self.groups.values():
            if name.lstrip("#") in (g.group_name, str(g.group_id)):
                return int(g.group_id)
        raise ChatError(f"unknown group {name!r} (try /groups)")

    def target(self, name: str, *, group: bool | None = None) -> Target:
        """A user or group by name; `group=None` tries users first, then groups."""
        if group is not True:
            with contextlib.suppress(ChatError):
                return Target(SINGLE, self.find_user(name), self.user_label(self.find_user(name)))
            if group is False:
                raise ChatError(f"unknown user {name!r} (try /users)")
        gid = self.find_group(name)
        return Target(GROUP, gid, f"#{self.groups[gid].group_name}")

    async def wait_received(self, text: str, timeout: float = 10.0) -> tuple[str, str, int]:
        """Wait until a message with exactly this text has arrived; returns (sender, text, msg id)."""
        async with asyncio.timeout(timeout):
            while True:
                for item in self.received:
                    if item[1] == text:
                        return item
                self._arrived.clear()
                await self._arrived.wait()

    # -- operations ------------------------------------------------------------------------------------------
    async def send(self, target: Target, text: str) -> int:
        """Send a text message and wait for the server's ack; returns the durable msg id."""
        self._msg_seq += 1
        msg = self.new(
            "CID_MSG_DATA",
            from_user_id=self.user_id,
            to_session_id=target.session_id,
            msg_id=self._msg_seq,
            create_time=int(time.time()),
            msg_type=GROUP_TEXT if target.session_type == GROUP else SINGLE_TEXT,
            msg_data=text.encode("utf-8"),
        )
        ack = await self.client.msg_data(msg)
        if not ack.msg_id:
            raise ChatError(f"message to {target.label} was refused (no msg id in the ack)")
        return int(ack.msg_id)

    async def history(self, target: Target, count: int = 10) -> list[tuple[int, str, str]]:
        """The last `count` messages of a session, oldest first: (msg id, sender, text)."""
        rsp = await self.client.msg_list_request(
            self.new(
                "CID_MSG_LIST_REQUEST",
                user_id=self.user_id,
                session_type=target.session_type,
                session_id=target.session_id,
                msg_id_begin=0,
                msg_cnt=count,
            )
        )
        return [
            (m.msg_id, self.user_label(m.from_session_id), m.msg_data.decode("utf-8", "replace"))
            for m in reversed(rsp.msg_list)
        ]

    async def mark_read(self, target: Target, msg_id: int = 0, *, confirm: bool = False) -> int:
        """Tell the server this session is read up to `msg_id` (default: its newest message), which clears
        its unread count and tells the user's other devices; returns the msg id marked. A read ack has no
        reply: `confirm` waits (up to 2 s) until the server's unread count shows it."""
        if not msg_id:
            rsp = await self.client.msg_get_latest_msg_id_req(
                self.new(
                    "CID_MSG_GET_LATEST_MSG_ID_REQ",
                    user_id=self.user_id,
                    session_type=target.session_type,
                    session_id=target.session_id,
                )
            )
            msg_id = int(rsp.latest_msg_id)
        await self.client.msg_read_ack(
            self.new(
                "CID_MSG_READ_ACK",
                user_id=self.user_id,
                session_id=target.session_id,
                msg_id=msg_id,
                session_type=target.session_type,
            )
        )
        self.read_acks += 1
        if confirm:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2.0
            while loop.time() < deadline and await self._unread_of(target):
                await asyncio.sleep(0.05)
        return msg_id

    async def _unread_of(self, target: Target) -> int:
        rsp = await self.client.msg_unread_cnt_request(
            self.new("CID_MSG_UNREAD_CNT_REQUEST", user_id=self.user_id)
        )
        return sum(
            i.unread_cnt
            for i in rsp.unreadinfo_list
            if (i.session_type, i.session_id) == (target.session_type, target.session_id)
        )

    async def create_group(self, name: str, members: list[str]) -> Target:
        """Make a temporary group of this user and `members` (login names); returns it as a target."""
        ids = [self.find_user(m) for m in members]
        rsp = await self.client.group_create_request(
            self.new(
                "CID_GROUP_CREATE_REQUEST",
                user_id=self.user_id,
                group_type=GROUP_TYPE_TMP,
                group_name=name,
                group_avatar="",
                member_id_list=sorted(set(ids)),
            )
        )
        if rsp.result_code != 0 or not rsp.group_id:
            raise ChatError(f"group {name!r} was not created (code {rsp.result_code})")
        self.extra_groups.add(int(rsp.group_id))
        await self.refresh()
        return Target(GROUP, int(rsp.group_id), f"#{name}")

    async def change_members(self, group: str, members: list[int], add: bool) -> list[int]:
        """Add users to or remove them from a group; returns the members after the change."""
        gid = self.find_group(group)
        rsp = await self.client.group_change_member_request(
            self.new(
                "CID_GROUP_CHANGE_MEMBER_REQUEST",
                user_id=self.user_id,
                change_type=GROUP_MODIFY_ADD if add else GROUP_MODIFY_DEL,
                group_id=gid,
                member_id_list=members,
            )
        )
        if rsp.result_code == ACCESS_DENIED:
            raise ChatError(f"only the creator of {group!r} may do that")
        if rsp.result_code != 0:
            raise ChatError(f"membership of {group!r} was not changed (code {rsp.result_code})")
        await self.refresh()
        return list(rsp.cur_user_id_list)

    async def send_file(self, user: str, path: Path) -> str:
        """Send a local file to a user (stored for them until they fetch it); returns the task id."""
        to = self.find_user(user)
        try:
            size = path.stat().st_size
            if size > MAX_SEND_FILE:
                raise ChatError(f"{path} has {size} bytes; the chat sends at most {MAX_SEND_FILE}")
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise ChatError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            return await self.files.send(self.user_id, to, path.name, data)
        except FileTransferError as exc:
            raise ChatError(str(exc)) from None

    async def list_files(self) -> list[OfflineFile]:
        """Files waiting for this user (numbered from 1 for `fetch_file`)."""
        self.waiting_files, self._file_addresses = await self.files.waiting()
        return self.waiting_files

    async def fetch_file(self, number: int, directory: Path) -> Path:
        """Download file `number` of the last listing into `directory` (never over an existing file)."""
        if not 1 <= number <= len(self.waiting_files):
            raise ChatError(f"no file {number} (see /files)")
        item = self.waiting_files[number - 1]
        name = Path(item.name).name or item.task_id  # never a path outside `directory`
        target = directory / name
        if target.exists():
            raise ChatError(f"{target} exists; fetch into another directory")
        try:
            data = await self.files.fetch(self.user_id, item, self._file_addresses)
        except FileTransferError as exc:
            raise ChatError(str(exc)) from None
        try:
            await asyncio.to_thread(target.write_bytes, data)
        except OSError as exc:
            raise ChatError(f"cannot write {target}: {exc.strerror or exc}") from None
        self.waiting_files.pop(number - 1)
        return target

    async def edit(self, target: Target, msg_id: int, text: str) -> int:
        """Replace the text of a message this user sent in `target`; returns the edit time."""
        rsp = await self.client.ext_msg_edit_req(
            self.new(
                "CID_EXT_MSG_EDIT_REQ",
                user_id=self.user_id,
                session_type=target.session_type,
                session_id=target.session_id,
                msg_id=msg_id,
                msg_data=text.encode("utf-8"),
            )
        )
        reasons = {1: "no such message", 2: "only its sender may edit it", 3: "too late to edit it"}
        if rsp.result_code != 0:
            why = reasons.get(rsp.result_code, "only text may be edited, to non-empty text")
            raise ChatError(f"message {msg_id} was not edited: {why}")
        return int(rsp.edit_time)

    async def unread(self) -> list[tuple[str, int]]:
        """(session label, unread count) for every session with unread messages."""
        rsp = await self.client.msg_unread_cnt_request(
            self.new("CID_MSG_UNREAD_CNT_REQUEST", user_id=self.user_id)
        )
        return [
            (
                self.user_label(i.session_id)
                if i.session_type == SINGLE
                else f"#{getattr(self.groups.get(i.session_id), 'group_name', i.session_id)}",
                i.unread_cnt,
            )
            for i in rsp.unreadinfo_list
        ]

    async def who(self) -> list[tuple[str, str]]:
        """(user, status) for every user in the directory."""
        req = self.new("CID_BUDDY_LIST_USERS_STATUS_REQUEST", user_id=self.user_id)
        req.user_id_list.extend(sorted(self.users))
        rsp = await self.client.buddy_list_users_status_request(req)
        return [
            (self.user_label(s.user_id), STATUS_NAMES.get(s.status, str(s.status)))
            for s in rsp.user_stat_list
        ]

    async def _push_loop(self) -> None:
        async for info, msg in self.core.pushes():
            try:
                await self._on_push(info.name, msg)
            except Exception as exc:  # one odd push must not end the session
                self.say(f"! could not handle {info.name}: {exc}")
        self.lost.set()  # pushes end only when the core is closed for good

    async def _on_push(self, name: str, msg: Any) -> None:
        if name == "CID_MSG_DATA":
            is_group = bool(msg.msg_type & 0x10)
            session = msg.to_session_id if is_group else msg.from_user_id
            await self.client.msg_data_ack(
                self.new(
                    "CID_MSG_DATA_ACK",
                    user_id=self.user_id,
                    session_id=session,
                    msg_id=msg.msg_id,
                    session_type=GROUP if is_group else SINGLE,
                )
            )
            text = msg.msg_data.decode("utf-8", "replace")
            if (is_group and msg.to_session_id not in self.groups) or msg.from_user_id not in self.users:
                if is_group:
                    self.extra_groups.add(int(msg.to_session_id))
                await self.refresh()  # a group or user made after we logged in
            sender = self.user_label(msg.from_user_id)
            if is_group:
                group = self.groups.get(msg.to_session_id)
                where = f"#{group.group_name}" if group is not None else f"#group{msg.to_session_id}"
            else:
                where = "you"
            self.received.append((sender, text, int(msg.msg_id)))
            self._arrived.set()
            self.say(f"[{time.strftime('%H:%M:%S')}] {sender} -> {where}: {text}   (msg {msg.msg_id})")
            # Shown on screen is read: the session's unread count clears and other devices are told.
            await self.mark_read(Target(GROUP if is_group else SINGLE, session, where), int(msg.msg_id))
        elif name == "CID_EXT_MSG_EDIT_NOTIFY":
            text = msg.msg_data.decode("utf-8", "replace")
            self.edits.append((int(msg.msg_id), text))
            self._arrived.set()
            self.say(f"* {self.user_label(msg.from_user_id)} edited msg {msg.msg_id}: {text}")
        elif name == "CID_FILE_NOTIFY":
            sender = self.user_label(msg.from_user_id)
            if msg.offline_ready:
                self.say(
                    f"* {sender} sent you {msg.file_name} ({msg.file_size} bytes): /files, then /getfile"
                )
        elif name == "CID_BUDDY_LIST_STATUS_NOTIFY":
            status = STATUS_NAMES.get(msg.user_stat.status, str(msg.user_stat.status))
            self.say(f"* {self.user_label(msg.user_stat.user_id)} is {status}")
        elif name == "CID_BUDDY_LIST_USERS_STATUS_RESPONSE":  # a coalesced presence flush (pushed, seq 0)
            for stat in msg.user_stat_list:
                status = STATUS_NAMES.get(stat.status, str(stat.status))
                self.say(f"* {self.user_label(stat.user_id)} is {status}")
        elif name == "CID_LOGIN_KICK_USER":
            self.say("* you were signed in elsewhere and have been disconnected")
        elif name == "CID_GROUP_CHANGE_MEMBER_NOTIFY":
            self.extra_groups.add(int(msg.group_id))
            await self.refresh()
            self.say(f"* members of group {msg.group_id} changed")


async def execute(session: ChatSession, line: str, state: dict[str, Target]) -> bool:
    """Run one input line; returns False on /quit."""
    line = line.strip()
    if not line:
        return True
    cmd, _, rest = line.partition(" ") if line.startswith("/") else ("", "", line)
    rest = rest.strip()
    say = session.say
    try:
        if cmd in ("/quit", "/exit"):
            return False
        if cmd == "/help":
            say(HELP)
        elif cmd in ("/msg", "/group") or (not cmd and "last" in state):
            if cmd:
                name, _, text = rest.partition(" ")
                state["last"] = session.target(name, group=(cmd == "/group"))
            else:
                text = rest
            if not text.strip():
                raise ChatError("nothing to send")
            target = state["last"]
            msg_id = await session.send(target, text)
            say(f"-> {target.label}: {text}   (acked, msg {msg_id})")
        elif not cmd:
            raise ChatError("use /msg USER text or /group NAME text first (see /help)")
        elif cmd == "/history":
            name, _, count = rest.partition(" ")
            target = session.target(name)
            rows = await session.history(target, int(count) if count.isdigit() else 10)
            say(f"history of {target.label} ({len(rows)} messages):")
            for msg_id, sender, text in rows:
                say(f"  {msg_id:>5}  {sender}: {text}")
            if rows:
                await session.mark_read(target, max(r[0] for r in rows), confirm=True)
        elif cmd == "/read":
            target = session.target(rest)
            say(f"{target.label} read up to msg {await session.mark_read(target, confirm=True)}")
        elif cmd == "/newgroup":
            name, _, members = rest.partition(" ")
            if not name or not _names(members):
                raise ChatError("usage: /newgroup NAME USER,USER...")
            target = await session.create_group(name, _names(members))
            state["last"] = target
            say(f"created {target.label} (group {target.session_id}); plain text now goes there")
        elif cmd in ("/invite", "/kick"):
            group, _, members = rest.partition(" ")
            if not group or not _names(members):
                raise ChatError(f"usage: {cmd} GROUP USER,USER...")
            ids = [session.find_user(m) for m in _names(members)]
            now = await session.change_members(group, ids, add=(cmd == "/invite"))
            say(f"members of #{group.lstrip('#')}: " + ", ".join(session.user_label(u) for u in sorted(now)))
        elif cmd == "/sendfile":
            name, _, path = rest.partition(" ")
            if not name or not path.strip():
                raise ChatError("usage: /sendfile USER PATH")
            task = await session.send_file(name, Path(path.strip()).expanduser())
            say(f"-> {name}: {Path(path.strip()).name} sent (task {task})")
        elif cmd == "/edit":
            number, _, text = rest.partition(" ")
            if not number.isdigit() or not text.strip() or "last" not in state:
                raise ChatError("usage: /edit MSGID new text (after a /msg or /group)")
            await session.edit(state["last"], int(number), text)
            say(f"edited msg {number} in {state['last'].label}")
        elif cmd == "/files":
            waiting = await session.list_files()
            say("files: " + ("nothing waiting" if not waiting else ""))
            for n, f in enumerate(waiting, start=1):
                say(f"  {n}. {f.name} ({f.size} bytes) from {session.user_label(f.from_user_id)}")
        elif cmd == "/getfile":
            number, _, directory = rest.partition(" ")
            if not number.isdigit():
                raise ChatError("usage: /getfile N [DIR]")
            saved = await session.fetch_file(int(number), Path(directory.strip() or ".").expanduser())
            say(f"saved {saved}")
        elif cmd == "/unread":
            counts = await session.unread()
            say("unread: " + (", ".join(f"{label} {n}" for label, n in counts) if counts else "nothing"))
        elif cmd == "/who":
            say("presence: " + ", ".join(f"{user} {status}" for user, status in await session.who()))
        elif cmd == "/users":
            await session.refresh()
            say("users: " + ", ".join(session.user_label(uid) for uid in sorted(session.users)))
        elif cmd == "/groups":
            await session.refresh()
            say("groups: " + (", ".join(f"#{g.group_name}" for g in session.groups.values()) or "none"))
        else:
            raise ChatError(f"unknown command {cmd} (see /help)")
    except ChatError as exc:
        say(f"! {exc}")
    except (TimeoutError, ConnectionError, OSError, RuntimeProtocolError) as exc:
        say(f"! {type(exc).__name__}: {exc}")
    return True


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Read stdin on a daemon thread (works for a terminal, a pipe and a file alike)."""
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line)
    loop.call_soon_threadsafe(queue.put_nowait, None)


def login_url_from_run_dir(data_dir: Path) -> str | None:
    """The login service's `/msg_server` URL published in a local cluster's run dir, if any."""
    found = RunDirDiscovery(data_dir / "run").endpoints("login", "http")
    return f"http://{found[0].host}:{found[0].port}/msg_server" if found else None


async def run_chat(
    stack: Stack, core: ClientCore, user: str, password: str, say: Callable[[str], None]
) -> int:
    """The interactive loop; returns the exit code."""
    session = ChatSession(stack, core, say)
    try:
        await session.login(user, password)
    except (ChatError, OSError, TimeoutError, RuntimeProtocolError) as exc:
        say(f"! cannot log in: {exc}")
        await core.close()
        return 1
    say(
        f"logged in as {user} (id {session.user_id}, {'encrypted' if core.encrypted else 'in clear'}); "
        f"{len(session.users)} users, {len(session.groups)} groups. /help for commands"
    )
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=_stdin_lines, args=(asyncio.get_running_loop(), queue), daemon=True).start()
    state: dict[str, Target] = {}
    lost = asyncio.create_task(session.lost.wait())
    code = 0
    try:
        while True:
            next_line = asyncio.create_task(queue.get())
            await asyncio.wait({next_line, lost}, return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                next_line.cancel()
                say("! the session ended (signed in elsewhere, or refused at a reconnect); log in again")
                code = 1
                break
            line = next_line.result()
            if line is None or not await execute(session, line, state):
                break
    finally:
        lost.cancel()
        await session.close()
    say("bye")
    return code


@click.command("chat")
@click.option("--user", "-u", required=True, help="Login name.")
@click.option(
    "--password", "-p", envvar="TTGEN_PASSWORD", help="Password (or TTGEN_PASSWORD; asked if absent)."
)
@click.option("--login-url", help="Login service URL (default: found in --data-dir, else :8080).")
@click.option("--server", help="Connect to this msg server (host:port) directly, skipping the login service.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ttgen-data"),
    show_default=True,
    help="A local cluster's data dir, to find the login service.",
)
@click.option("--spec", default="teamtalk", show_default=True, help="The generated stack to speak.")
@click.option(
    "--encryption",
    type=click.Choice(ENCRYPTION_MODES),
    default="prefer",
    show_default=True,
    envvar="TTGEN_ENCRYPTION",
    help="prefer: an encrypted session when the server offers one; require: refuse to chat in clear; off.",
)
def chat(
    user: str,
    password: str | None,
    login_url: str | None,
    server: str | None,
    data_dir: Path,
    spec: str,
    encryption: str,
) -> None:
    """Chat in the terminal: /msg USER text, /group NAME text, /history, /unread, /sendfile, /newgroup, /quit.

    \b
    Examples:
      ttgen chat --user alice               # against `ttgen up` in ./ttgen-data
      ttgen chat -u bob --server 127.0.0.1:8000
      printf '/msg bob hi\\n/quit\\n' | ttgen chat -u alice -p secret
    """
    if password is None:
        password = click.prompt("password", hide_input=True)
    stack = load_stack(spec)
    if server:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise click.BadParameter("expected host:port", param_hint="--server")
        core_args: dict[str, Any] = {"host": host, "port": int(port)}
    else:
        url = login_url or login_url_from_run_dir(data_dir) or "http://127.0.0.1:8080/msg_server"
        core_args = {"login_url": url}

    def say(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    def queued(position: int, wait: float) -> None:
        say(f"* waiting to log in: position {position} in the queue, about {wait:.0f} s")

    async def main() -> int:
        core = ClientCore(
            stack.registry,
            reconnect=True,
            backoff_initial=0.5,
            backoff_max=8.0,
            on_queue=queued,
            encryption=encryption,
            **core_args,
        )
        return await run_chat(stack, core, user, password or "", say)

    sys.exit(asyncio.run(main()))

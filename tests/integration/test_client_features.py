"""Integration: the shipped clients' features on a real cluster, driven through `ttgen chat`'s session and
command lines (no hand-written frames): the secure session negotiated by default (and plaintext refused on
request), a login-queue place released when the client gives up, read acks that clear `/unread`, files sent
and fetched, and temporary groups made, joined, used and shrunk."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.client import ClientCore
from runtime.errors import LoginServiceError, PlaintextRefused
from tests.integration.conftest import PASSWORD, TestCluster, run_in_cluster
from tests.integration.file_support import FileCluster, run_file_cluster
from ttgen.commands.chat import ChatSession, Target, execute
from ttgen.stack import load_stack

pytestmark = pytest.mark.integration
STACK = load_stack("teamtalk")
PRESENCE_NOTICE = re.compile(r"\* \S+ is (online|offline|away|\d+)")


class Chat:
    """One `ttgen chat` session: its printed lines, and command lines run as if typed."""

    def __init__(self, session: ChatSession, lines: list[str]) -> None:
        self.session, self.lines = session, lines
        self.state: dict[str, Target] = {}

    async def run(self, line: str) -> list[str]:
        """Run one typed line; returns what it printed (less presence notices, which a coalesced presence
        flush may print at any moment, e.g. while this line runs)."""
        start = len(self.lines)
        assert await execute(self.session, line, self.state)
        return [out for out in self.lines[start:] if not PRESENCE_NOTICE.fullmatch(out)]


async def chat(c: TestCluster, name: str, index: int = 0, **core: Any) -> Chat:
    lines: list[str] = []
    port = c.msg_port(index)
    session = ChatSession(STACK, ClientCore(REGISTRY, host="127.0.0.1", port=port, **core), lines.append)
    await session.login(name, PASSWORD)
    return Chat(session, lines)


def login_http(c: TestCluster) -> tuple[str, int]:
    (login,) = c.services("login")
    (ep,) = [e for e in login.endpoints() if e.kind == "http"]
    return ep.host, ep.port


def test_the_shipped_client_negotiates_the_secure_session_by_default(tmp_path: Path) -> None:
    async def body(c: TestCluster) -> None:
        alice, bob = await chat(c, "user00", 0), await chat(c, "user01", 1)
        for who in (alice, bob):
            link = who.session.core.link
            assert who.session.core.encrypted and link is not None and "cipher" in link.data
        out = await alice.run("/msg user01 sealed hello")
        assert any("acked" in line for line in out), out
        sender, text, _ = await bob.session.wait_received("sealed hello")
        assert sender == "user00" and text == "sealed hello"
        cipher = alice.session.core.link.data["cipher"] if alice.session.core.link else None
        assert cipher is not None and cipher.send_counter >= 2  # the login and the message went sealed
        for who in (alice, bob):
            await who.session.close()

    run_in_cluster(tmp_path, body)


def test_plaintext_is_refused_on_request_and_tolerated_by_default(tmp_path: Path) -> None:
    async def body(c: TestCluster) -> None:
        # The login service's client port speaks TeamTalk but has no secure session: it never answers.
        (login,) = c.services("login")
        (ep,) = [e for e in login.endpoints() if e.kind == "client"]
        strict = ClientCore(
            REGISTRY, host=ep.host, port=ep.port, reconnect=False, encryption="require", handshake_timeout=0.3
        )
        with pytest.raises(PlaintextRefused, match="encryption=require"):
            await strict.connect()
        assert not strict.connected
        await strict.close()
        lenient = ClientCore(REGISTRY, host=ep.host, port=ep.port, reconnect=False, handshake_timeout=0.3)
        await lenient.connect()
        assert lenient.connected and not lenient.encrypted
        await lenient.close()
        off = ClientCore(REGISTRY, host="127.0.0.1", port=c.msg_port(0), reconnect=False, encryption="off")
        await off.connect()
        assert not off.encrypted and off.link is not None and "cipher" not in (off.link.data or {})
        await off.close()
        with pytest.raises(ValueError, match="encryption"):
            ClientCore(REGISTRY, host="127.0.0.1", port=1, encryption="maybe")

    run_in_cluster(tmp_path, body)


def test_a_client_that_gives_up_queueing_releases_its_place(tmp_path: Path) -> None:
    async def body(c: TestCluster) -> None:
        (login,) = c.services("login")
        host, port = login_http(c)
        url = f"http://{host}:{port}/msg_server"
        # Fill the admission window with logins that never finish, then queue one client and let it give up.
        for _ in range(2):
            assert login.decide("", "10.0.0.1").server is not None
        places: list[int] = []
        core = ClientCore(
            REGISTRY,
            login_url=url,
            reconnect=False,
            queue_timeout=0.5,
            on_queue=lambda p, _w: places.append(p),
        )
        with pytest.raises(LoginServiceError, match="still queued"):
            await core.connect()
        assert places and places[0] == 1
        assert len(login.admission.queue) == 0  # released at once, not `ticket_ttl` later
        # A cancelled wait releases its place too.
        told = asyncio.Event()
        waiting = ClientCore(REGISTRY, login_url=url, reconnect=False, on_queue=lambda _p, _w: told.set())
        waiter = asyncio.create_task(waiting.connect())
        await asyncio.wait_for(told.wait(), 10)  # the client holds its ticket
        assert len(login.admission.queue) == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert len(login.admission.queue) == 0

    run_in_cluster(
        tmp_path,
        body,
        login={"admission_window_min": 2, "admission_target": 0.01, "admission_rate": 2, "ticket_ttl": 60},
    )


def test_read_acks_clear_unread(tmp_path: Path) -> None:
    async def body(c: TestCluster) -> None:
        alice = await chat(c, "user00", 0)
        for text in ("one", "two", "three"):
            await alice.run(f"/msg user01 {text}")
        bob = await chat(c, "user01", 1)
        assert await bob.run("/unread") == ["unread: user00 3"], bob.lines
        out = await bob.run("/history user00")
        assert [line.split(": ", 1)[1] for line in out[1:]] == ["one", "two", "three"]
        assert await bob.run("/unread") == ["unread: nothing"]
        # A message shown live is read at once: the unread count stays clear.
        await alice.run("/msg user01 live")
        await bob.session.wait_received("live")
        for _ in range(200):
            if bob.session.read_acks >= 2 and await bob.run("/unread") == ["unread: nothing"]:
                break
            await asyncio.sleep(0.01)
        assert bob.session.read_acks >= 2
        assert await bob.run("/unread") == ["unread: nothing"]
        # /read marks a session read without showing it.
        await bob.session.close()
        await alice.run("/msg user01 unseen")
        bob = await chat(c, "user01", 1)
        assert await bob.run("/unread") == ["unread: user00 1"]
        assert (await bob.run("/read user00"))[0].startswith("user00 read up to msg ")
        assert await bob.run("/unread") == ["unread: nothing"]
        for who in (alice, bob):
            await who.session.close()

    run_in_cluster(tmp_path, body)


def test_temporary_groups_are_made_used_and_shrunk_from_the_chat(tmp_path: Path) -> None:
    async def body(c: TestCluster) -> None:
        alice, bob, carol = await chat(c, "user00", 0), await chat(c, "user01", 1), await chat(c, "user02", 0)
        out = await alice.run("/newgroup lunch user01")
        assert out[0].startswith("created #lunch"), out
        await alice.run("who is hungry?")  # plain text goes to the new group
        sender, _, _ = await bob.session.wait_received("who is hungry?")
        assert sender == "user00" and "lunch" in [g.group_name for g in bob.session.groups.values()]
        assert (await alice.run("/invite lunch user02"))[0] == "members of #lunch: user00, user01, user02"
        for _ in range(200):
            if any(g.group_name == "lunch" for g in carol.session.groups.values()):
                break
            await asyncio.sleep(0.01)
        await carol.run("/group lunch me too")
        await alice.session.wait_received("me too")
        await bob.session.wait_received("me too")
        assert await bob.run("/kick lunch user02") == ["! only the creator of 'lunch' may do that"]
        assert (await alice.run("/kick lunch user01"))[0] == "members of #lunch: user00, user02"
        for _ in range(200):  # bob is told (a member-change push) and forgets the group
            if not any(g.group_name == "lunch" for g in bob.session.groups.values()):
                break
            await asyncio.sleep(0.01)
        assert not any(g.group_name == "lunch" for g in bob.session.groups.values())
        await alice.run("/group lunch bob left")
        await carol.session.wait_received("bob left")
        await asyncio.sleep(0.2)
        assert "bob left" not in [t for _, t, _ in bob.session.received]
        # A fresh login finds the temporary group again (through the recent sessions).
        await carol.session.close()
        carol = await chat(c, "user02", 1)
        assert any(g.group_name == "lunch" for g in carol.session.groups.values())
        assert (await carol.run("/newgroup x nobody"))[0].startswith("! unknown user 'nobody'")
        for who in (alice, bob, carol):
            await who.session.close()

    run_in_cluster(tmp_path, body)


def test_files_are_sent_and_fetched_from_the_chat(tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    source = tmp_path / "report.bin"
    source.write_bytes(payload)
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    async def body(c: FileCluster) -> None:
        alice, bob = await chat(c, "user00", 0), await chat(c, "user01", 1)
        out = await alice.run(f"/sendfile user01 {source}")
        assert out[0].startswith("-> user01: report.bin sent (task "), out
        for _ in range(300):
            if any("sent you report.bin" in line for line in bob.lines):
                break
            await asyncio.sleep(0.01)
        assert any("sent you report.bin (300000 bytes)" in line for line in bob.lines), bob.lines
        listing = await bob.run("/files")
        assert listing[1].strip() == "1. report.bin (300000 bytes) from user00", listing
        assert await bob.run(f"/getfile 1 {inbox}") == [f"saved {inbox / 'report.bin'}"]
        assert (inbox / "report.bin").read_bytes() == payload
        for _ in range(200):
            if (await bob.run("/files")) == ["files: nothing waiting"]:
                break
            await asyncio.sleep(0.01)
        assert await bob.run("/files") == ["files: nothing waiting"]  # fetched files are deleted
        assert (await bob.run(f"/getfile 1 {inbox}"))[0] == "! no file 1 (see /files)"
        assert (await alice.run(f"/sendfile user01 {tmp_path / 'missing'}"))[0].startswith("! cannot read ")
        for who in (alice, bob):
            await who.session.close()

    asyncio.run(run_file_cluster(tmp_path, body))

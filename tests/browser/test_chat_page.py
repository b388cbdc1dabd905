"""End-to-end: the chat page in two headless Chromium browsers and one TCP client (the generated Python
client) against a real cluster. Alice and Bob use the page, Carol the TCP protocol; the tests run in order and
share the pages. Screenshots of the main screens go to tests/artifacts/browser/.
"""

from __future__ import annotations

import json
import struct
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from codegen.api import check_spec
from runtime.services.gateway.client_api import WS_OPS
from tests.browser.conftest import HOSTILE_DEPT, HOSTILE_GROUP, HOSTILE_NICK, ROOT, WebCluster

pytestmark = pytest.mark.integration

WAIT = 10.0
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold?</b> & "quotes"'


class Page:
    """One browser on the chat page, logged in as a demo user."""

    def __init__(self, driver: Any, cluster: WebCluster, name: str, artifacts: Path) -> None:
        self.d, self.cluster, self.name, self.artifacts = driver, cluster, name, artifacts

    # waiting and reading -------------------------------------------------------------------------------
    def until(self, check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                self.shot(f"timeout-{self.name}")
                logs = "\n".join(str(e) for e in self.d.get_log("browser")[-20:])
                raise AssertionError(f"{self.name}: timed out waiting for {what}\nbrowser console:\n{logs}")
            time.sleep(0.05)

    def js(self, script: str, *args: Any) -> Any:
        return self.d.execute_script(script, *args)

    def shot(self, name: str) -> None:
        self.d.save_screenshot(str(self.artifacts / f"{name}.png"))

    def state(self) -> str:
        return str(self.js("return document.getElementById('conn-state').dataset.state"))

    def messages(self) -> list[dict[str, Any]]:
        """The open conversation's items: msg id, class, body text, whether the body holds any element."""
        rows: list[dict[str, Any]] = self.js(
            """return [...document.querySelectorAll('#messages > li')].map(li => ({
                 id: Number(li.dataset.msgId), cls: li.className, state: li.dataset.state || '',
                 text: (li.querySelector('.body') || li).textContent,
                 elements: li.querySelector('.body') ? li.querySelector('.body').children.length : 0,
                 receipt: li.querySelector('.receipt') ? li.querySelector('.receipt').textContent : ''}))"""
        )
        return rows

    def message(self, text: str) -> dict[str, Any]:
        return self.until(lambda: next((m for m in self.messages() if m["text"] == text), None), repr(text))

    def badge(self, key: str) -> int:
        text = self.js(
            "const b = document.querySelector(`.conv[data-key='${arguments[0]}'] .badge`);"
            "return b && !b.hidden ? b.textContent : '0'",
            key,
        )
        return int(text or 0)

    # acting --------------------------------------------------------------------------------------------
    def login(self, password: str = "demo", query: str = "") -> None:
        self.d.get(self.cluster.url + "?burn_ms=1500&page=4" + query)
        self.until(lambda: self.js("return !!document.getElementById('login-user')"), "the login form")
        self.js("document.getElementById('login-user').value = arguments[0];"
                "document.getElementById('login-password').value = arguments[1];", self.name, password)
        self.d.find_element("id", "login-submit").click()

    def logged_in(self) -> None:
        self.until(lambda: self.js("return !document.getElementById('chat-view').hidden"), "the chat view")
        self.until(lambda: self.state() == "online", "online")

    def open(self, tab: str, key: str) -> None:
        self.d.find_element("id", f"tab-{tab}").click()
        self.d.find_element("css selector", f"#pane-{tab} .conv[data-key='{key}']").click()
        self.until(lambda: self.js("return !document.getElementById('composer').hidden"), "the composer")

    def send(self, text: str, burn: bool = False, wait: bool = True) -> dict[str, Any] | None:
        box = self.d.find_element("id", "burn")
        if box.is_selected() != burn:
            box.click()
        area = self.d.find_element("id", "composer-text")
        area.clear()
        self.js("document.getElementById('composer-text').value = arguments[0]", text)
        self.d.find_element("id", "send").click()
        if not wait:
            return None
        mine: dict[str, Any] = self.until(
            lambda: next((m for m in self.messages() if m["text"] == text and "mine" in m["cls"]), None),
            f"own message {text!r}",
        )
        return mine


@pytest.fixture(scope="module")
def pages(
    web_cluster: WebCluster, browsers: Callable[[], Any], artifacts: Path
) -> Iterator[dict[str, Page]]:
    alice = Page(browsers(), web_cluster, "alice", artifacts)
    bob = Page(browsers(), web_cluster, "bob", artifacts)
    yield {"alice": alice, "bob": bob}


def test_login_refused_then_accepted(pages: dict[str, Page], web_cluster: WebCluster) -> None:
    alice, bob = pages["alice"], pages["bob"]
    alice.login(password="wrong")
    alice.until(lambda: alice.js("return document.getElementById('login-error').textContent"), "the refusal")
    alice.shot("01-login-refused")
    alice.login()
    bob.login()
    alice.logged_in()
    bob.logged_in()
    # Contacts by department, groups, presence from the directory.
    alice.d.find_element("id", "tab-contacts").click()
    depts = alice.js("return [...document.querySelectorAll('#dept-tree summary')].map(s => s.textContent)")
    assert depts == ["Engineering", HOSTILE_DEPT]
    bob_key = f"1:{web_cluster.users['bob']}"
    dot = f"#pane-contacts .conv[data-key='{bob_key}'] .dot"
    alice.until(
        lambda: alice.js("return document.querySelector(arguments[0]).dataset.presence", dot) == "online",
        "bob online",
    )
    # Names are text: markup in a nick or a group name makes no element and runs nothing.
    names = alice.js("return [...document.querySelectorAll('#dept-tree .conv-name')].map(s => s.textContent)")
    assert HOSTILE_NICK in names
    markup = "#dept-tree img, #dept-tree svg, summary *"
    assert alice.js("return document.querySelectorAll(arguments[0]).length", markup) == 0
    alice.shot("02-contacts")
    alice.d.find_element("id", "tab-groups").click()
    groups = alice.js(
        "return [...document.querySelectorAll('#group-list .conv-name')].map(s => s.textContent)"
    )
    assert sorted(groups) == sorted([HOSTILE_GROUP, "team"])
    assert alice.js("return document.querySelectorAll('#group-list script').length") == 0
    assert alice.js("return window.__pwned === undefined")
    alice.shot("02-groups")


def test_one_to_one_text_receipts_typing_and_html_shown_as_text(
    pages: dict[str, Page], web_cluster: WebCluster
) -> None:
    alice, bob = pages["alice"], pages["bob"]
    ids = web_cluster.users
    alice.open("contacts", f"1:{ids['bob']}")
    sent = alice.send(HOSTILE)
    assert sent is not None
    # Bob has not opened the conversation: an unread badge.
    bob.until(lambda: bob.badge(f"1:{ids['alice']}") >= 1, "bob's unread badge")
    bob.shot("03-unread-badge")
    bob.open("contacts", f"1:{ids['alice']}")
    seen = bob.message(HOSTILE)
    assert seen["id"] == sent["id"]
    assert seen["elements"] == 0, "markup in a message must not become elements"
    assert bob.js("return window.__pwned === undefined") and alice.js("return window.__pwned === undefined")
    assert bob.badge(f"1:{ids['alice']}") == 0
    # Bob's page read the conversation: Alice's message shows the receipt.
    alice.until(lambda: alice.message(HOSTILE)["receipt"] == "Read", "the read receipt")
    # Bob types: Alice sees it.
    bob.d.find_element("id", "composer-text").send_keys("typing")
    alice.until(
        lambda: "is typing" in alice.js("return document.getElementById('typing').textContent"), "typing"
    )
    bob.send("plain reply")
    alice.message("plain reply")
    alice.shot("04-conversation")


def test_tcp_client_and_group_chat(pages: dict[str, Page], web_cluster: WebCluster) -> None:
    alice, bob = pages["alice"], pages["bob"]
    ids = web_cluster.users
    carol = web_cluster.tcp_login("carol")
    # TCP -> page (1:1), with a badge while the conversation is closed.
    web_cluster.call(lambda: carol.send(carol.target("alice", group=False), "hello from the TCP client"))
    alice.until(lambda: alice.badge(f"1:{ids['carol']}") == 1, "alice's badge for carol")
    alice.open("contacts", f"1:{ids['carol']}")
    alice.message("hello from the TCP client")
    # page -> TCP (1:1)
    alice.send("hello TCP, from the page")
    web_cluster.call(lambda: carol.wait_received("hello TCP, from the page", WAIT))
    # Group: page -> page and TCP; TCP -> pages.
    group = f"2:{next(iter(carol.groups))}"
    alice.open("groups", group)
    alice.send("hello team")
    web_cluster.call(lambda: carol.wait_received("hello team", WAIT))
    bob.until(lambda: bob.badge(group) >= 1, "bob's group badge")
    web_cluster.call(lambda: carol.send(carol.target("team", group=True), "carol to the team"))
    alice.message("carol to the team")
    bob.open("groups", group)
    bob.message("hello team")
    bob.message("carol to the team")
    bob.shot("05-group")


def test_recall_and_burn_after_reading(pages: dict[str, Page], web_cluster: WebCluster) -> None:
    alice, bob = pages["alice"], pages["bob"]
    ids = web_cluster.users
    alice.open("contacts", f"1:{ids['bob']}")
    bob.open("contacts", f"1:{ids['alice']}")
    oops = alice.send("this one goes back")
    assert oops is not None
    bob.message("this one goes back")
    alice.d.find_element("css selector", f"#messages li[data-msg-id='{oops['id']}'] button.recall").click()
    for page in (alice, bob):
        page.until(
            lambda p=page: any(m["id"] == oops["id"] and m["state"] == "recalled" for m in p.messages()),
            "the recall notice",
        )
        assert not any(m["text"] == "this one goes back" for m in page.messages())
    alice.send("burn me after reading", burn=True, wait=False)
    # Bob's page has the conversation open: it reads the message, shows it for burn_ms, then destroys it.
    burning = "burn me after reading"
    shown = bob.until(
        lambda: next((m for m in bob.messages() if m["text"] == burning and "burning" in m["cls"]), None),
        "the message shown while it burns",
    )
    assert shown["id"] > oops["id"]
    # The read destroyed it everywhere: Alice's copy goes as the burned notice arrives, Bob's after burn_ms.
    for page in (alice, bob):
        page.until(
            lambda p=page: any(m["id"] == shown["id"] and m["state"] == "burned" for m in p.messages()),
            "the burned notice",
        )
        assert not any(m["text"] == "burn me after reading" for m in page.messages())
    bob.shot("06-recall-and-burn")


def test_edit_shows_the_latest_text_marked_edited(pages: dict[str, Page], web_cluster: WebCluster) -> None:
    alice, bob = pages["alice"], pages["bob"]
    ids = web_cluster.users
    alice.open("contacts", f"1:{ids['bob']}")
    bob.open("contacts", f"1:{ids['alice']}")
    sent = alice.send("see you at 3pm")
    assert sent is not None
    bob.message("see you at 3pm")
    alice.d.find_element("css selector", f"#messages li[data-msg-id='{sent['id']}'] button.edit").click()
    alice.js(
        "document.querySelector(`#messages li[data-msg-id='${arguments[0]}'] .edit-text`).value ="
        " arguments[1]",
        sent["id"],
        "see you at <b>4pm</b>",
    )
    alice.d.find_element("css selector", f"#messages li[data-msg-id='{sent['id']}'] .edit-save").click()
    for page in (alice, bob):
        edited = page.message("see you at <b>4pm</b>")  # the new text, shown as text
        assert edited["id"] == sent["id"] and edited["elements"] == 0
        page.until(
            lambda p=page: p.js(
                "return !!document.querySelector(`#messages li[data-msg-id='${arguments[0]}'] .edited`)",
                sent["id"],
            ),
            "the edited mark",
        )
        assert not any(m["text"] == "see you at 3pm" for m in page.messages())
    bob.shot("06b-edited")


def test_history_scroll_back(pages: dict[str, Page], web_cluster: WebCluster) -> None:
    alice = pages["alice"]
    ids = web_cluster.users
    for i in range(6):
        alice.send(f"history line {i}")
    # Reopen: the newest page (page=4 in the URL) loads first; older ones on request.
    alice.open("contacts", f"1:{ids['carol']}")
    alice.open("contacts", f"1:{ids['bob']}")
    alice.until(lambda: len(alice.messages()) == 4, "the first page of 4")
    assert alice.messages()[-1]["text"] == "history line 5"
    alice.d.find_element("id", "load-older").click()
    alice.until(lambda: len(alice.messages()) == 8, "the second page")
    ordered = [m["id"] for m in alice.messages()]
    assert ordered == sorted(ordered)
    alice.shot("07-history")


def _png(path: Path) -> None:
    """A 4x4 red PNG."""
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 4 for _ in range(4))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_file_and_image(pages: dict[str, Page], web_cluster: WebCluster, tmp_path: Path) -> None:
    alice, bob = pages["alice"], pages["bob"]
    ids = web_cluster.users
    image = tmp_path / "red<dot>.png"
    _png(image)
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes\n", encoding="utf-8")
    alice.open("contacts", f"1:{ids['bob']}")
    bob.open("contacts", f"1:{ids['alice']}")
    for path in (image, notes):
        alice.d.find_element("id", "file-input").send_keys(str(path))
        alice.message(path.name if path is image else f"{path.name} ({path.stat().st_size} bytes)")
    # Bob's page shows the image, fetched through the gateway with his session (only parties may read it).
    loaded = bob.until(
        lambda: bob.js(
            "const img = [...document.querySelectorAll('#messages img')].find(i => i.alt === arguments[0]);"
            "return img && img.complete && img.naturalWidth", image.name,
        ),
        "the image loaded",
    )
    assert loaded == 4
    link = bob.until(
        lambda: bob.js(
            "const a = [...document.querySelectorAll('#messages a')].find(a => a.download === 'notes.txt');"
            "return a && a.href"
        ),
        "the file link",
    )
    assert "/api/blob/" in link
    bob.shot("08-files")


def test_reconnect_state_and_resume(pages: dict[str, Page], web_cluster: WebCluster) -> None:
    alice, bob = pages["alice"], pages["bob"]
    ids = web_cluster.users
    bob.open("contacts", f"1:{ids['alice']}")
    web_cluster.loop.run(web_cluster.proxy.cut())
    bob.until(lambda: bob.state() == "reconnecting", "the reconnecting state")
    assert bob.js("return !document.getElementById('conn-banner').hidden")
    bob.shot("09-reconnecting")
    # Sent while Bob's page is cut off: it arrives after the page reconnects and resumes.
    carol = web_cluster.sessions[0] if web_cluster.sessions else web_cluster.tcp_login("carol")
    web_cluster.call(lambda: carol.send(carol.target("bob", group=False), "sent while you were away"))
    web_cluster.loop.run(web_cluster.proxy.restore())
    bob.until(lambda: bob.state() == "online", "online again", timeout=20)
    bob.until(lambda: bob.badge(f"1:{ids['carol']}") >= 1, "the message sent during the outage")
    assert bob.js("return document.getElementById('conn-banner').hidden")
    alice.until(lambda: alice.state() == "online", "alice online again", timeout=20)
    assert alice.js("return document.getElementById('conn-state').dataset.mode") == "websocket"


def test_long_poll_transport(pages: dict[str, Page], web_cluster: WebCluster) -> None:
    """The same page on long-poll (as behind a proxy that drops WebSocket upgrades)."""
    alice, bob = pages["alice"], pages["bob"]
    ids = web_cluster.users
    bob.login(query="&transport=poll")
    bob.logged_in()
    assert bob.js("return document.getElementById('conn-state').dataset.mode") == "poll"
    bob.open("contacts", f"1:{ids['alice']}")
    alice.open("contacts", f"1:{ids['bob']}")
    alice.send("over long-poll")
    bob.message("over long-poll")
    bob.send("and back")
    alice.message("and back")


def test_the_spec_web_section_is_what_the_gateway_serves(web_cluster: WebCluster) -> None:
    """Every command of spec/teamtalk/web.yaml (what the page's client is generated from) is a route of the
    running gateway, and the WebSocket carries exactly the commands the spec says it does."""
    spec, _ = check_spec(ROOT / "spec" / "teamtalk")
    assert spec.web is not None
    on_socket = {c.name for c in spec.web.commands if c.ws}
    assert on_socket == set(WS_OPS)
    base = f"http://{web_cluster.gateway[0]}:{web_cluster.gateway[1]}"
    for command in spec.web.commands:
        if not command.method:
            continue
        body = b"{}" if command.method == "POST" else None
        request = urllib.request.Request(base + command.path, data=body, method=command.method)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # a loopback address of the test
                status, doc = answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as refused:
            status, doc = refused.code, json.loads(refused.read())
        # No token: an authenticated command is refused as "not logged in" (2), login as a bad request (1);
        # never "no such endpoint" or "method not allowed".
        # Discovery needs no session and no arguments: it answers.
        expected = (401, 2) if command.auth else (200, 0) if command.name == "discovery" else (400, 1)
        assert (status, doc["error_code"]) == expected, (command.name, status, doc)


def test_a_newer_login_elsewhere_ends_the_page_session(
    pages: dict[str, Page], web_cluster: WebCluster, browsers: Callable[[], Any], artifacts: Path
) -> None:
    alice = pages["alice"]
    elsewhere = Page(browsers(), web_cluster, "alice", artifacts)
    elsewhere.login()
    elsewhere.logged_in()
    alice.until(lambda: alice.js("return !document.getElementById('login-view').hidden"), "the login view")
    message = alice.js("return document.getElementById('login-error').textContent")
    assert "logged in elsewhere" in message
    assert alice.state() == "offline"
    alice.shot("10-kicked")

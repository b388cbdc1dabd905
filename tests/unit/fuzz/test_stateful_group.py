"""The stateful chat model's group part (runtime.fuzz.stateful_group): the model's own arithmetic, that the
CI-profile run of the bundled spec's machine reaches every group rule, and that it fails on planted bugs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis.errors import HypothesisException

from generated.teamtalk import registry, servers, strategies
from runtime.fuzz import chat, stateful
from runtime.fuzz.cluster import ClusterTarget
from runtime.fuzz.profiles import ensure_profiles, suite_settings
from runtime.fuzz.stack import FuzzStack
from runtime.fuzz.stateful_group import GroupChatMachine, GroupModel
from runtime.storage.sqlite import groups as sqlite_groups
from runtime.storage.sqlite import messages as sqlite_messages

ENUMS = registry.REGISTRY.enums

STACK = FuzzStack.from_modules(registry, servers, strategies)


def test_group_model_unread_and_visibility() -> None:
    g = GroupModel(7, "alice", set())
    for user in ("alice", "bob"):
        g.join(user)
    g.msgs += [("alice", 1), ("bob", 2), ("alice", 3)]
    g.read["alice"] = 3  # sending reads the group for the sender
    assert (g.unread("alice"), g.unread("bob"), g.unread("carol")) == (0, 2, 0)
    g.join("carol")  # joins after msg 3: sees nothing before it, nothing unread
    g.msgs.append(("bob", 4))
    assert (g.unread("carol"), g.visible("carol"), g.visible("bob")) == (1, [4], [4, 3, 2, 1])
    g.members.discard("bob")
    assert (g.unread("bob"), g.visible("bob")) == (0, [])


def test_budget_follows_the_input_rate_limit() -> None:
    client: Any = object.__new__(chat.ChatClient)
    client.stack, client.sent = STACK, {"CID_MSG_DATA": 5}
    assert client.budget("CID_MSG_DATA") == 15  # IMMsgData: 20/s, burst 20
    assert client.budget("CID_MSG_UNREAD_CNT_REQUEST") == 50


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterTarget]:
    target = ClusterTarget(STACK)
    try:
        yield target
    finally:
        target.close()


@pytest.fixture
def outcomes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """What the machine's clients asked and how the cluster answered, by kind."""
    seen: Counter[str] = Counter()
    call, send = chat.ChatClient.call, chat.ChatClient.send

    def counted_call(self: chat.ChatClient, command: str, **fields: Any) -> Any:
        rsp = call(self, command, **fields)
        if command == "CID_MSG_DATA":
            kind = "group" if fields["msg_type"] & ENUMS.MsgTypeBits.GROUP else "single"
            seen[f"send {kind} {'refused' if rsp.msg_id == 0 else 'ok'}"] += 1
        elif command == "CID_GROUP_CHANGE_MEMBER_REQUEST":
            op = "add" if fields["change_type"] == ENUMS.GroupModifyType.GROUP_MODIFY_TYPE_ADD else "del"
            seen[f"change {op} {'refused' if rsp.result_code else 'ok'}"] += 1
        else:
            seen[command] += 1
        return rsp

    def counted_send(self: chat.ChatClient, command: str, **fields: Any) -> int:
        if command == "CID_MSG_READ_ACK":
            group = fields["session_type"] == ENUMS.SessionType.SESSION_TYPE_GROUP
            seen[f"read {'group' if group else 'single'}"] += 1
        return send(self, command, **fields)

    monkeypatch.setattr(chat.ChatClient, "call", counted_call)
    monkeypatch.setattr(chat.ChatClient, "send", counted_send)
    return seen


@pytest.mark.integration
def test_ci_run_reaches_every_group_rule(cluster: ClusterTarget, outcomes: Counter[str]) -> None:
    ensure_profiles()
    assert issubclass(stateful.machine_for(STACK, cluster), GroupChatMachine)
    wanted = [
        "CID_GROUP_CREATE_REQUEST",
        "change add ok",
        "change add refused",
        "change del ok",
        "change del refused",
        "send group ok",
        "send group refused",
        "send single ok",
        "read group",
        "read single",
        "CID_MSG_LIST_REQUEST",
        "CID_MSG_GET_LATEST_MSG_ID_REQ",
        "CID_MSG_UNREAD_CNT_REQUEST",
    ]
    # The machine's rules depend on time too (each client's rate budget refills with the clock), so on a busy
    # machine one derandomized run may take other branches: further runs (new seeds) until each is reached.
    for attempt in range(4):
        stateful.run_machine(STACK, cluster, suite_settings("stateful", derandomize=attempt == 0))
        if all(outcomes[w] for w in wanted):
            break
    assert [w for w in wanted if not outcomes[w]] == [], outcomes


def _fails(cluster: ClusterTarget) -> str:
    opts = suite_settings("stateful", derandomize=True, phases=[Phase.generate], report_multiple_bugs=False)
    with pytest.raises((AssertionError, HypothesisException)) as err:
        stateful.run_machine(STACK, cluster, settings(opts, max_examples=20))
    return str(err.value)


@pytest.mark.integration
def test_fails_when_anyone_may_change_members(
    cluster: ClusterTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    change = sqlite_groups.change_members
    monkeypatch.setattr(
        sqlite_groups, "change_members", lambda conn, ctx, _actor, *a: change(conn, ctx, None, *a)
    )
    assert "want ACCESS_DENIED" in _fails(cluster)


@pytest.mark.integration
def test_fails_when_a_non_member_may_send(cluster: ClusterTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_messages, "member_floor", lambda conn, user_id, group_id: (0, 0))
    assert "(not a member) sent to group" in _fails(cluster)

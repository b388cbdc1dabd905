"""Runtime fuzz layer: TMP groups on top of the 1:1 chat model (`runtime.fuzz.chat.ChatMachine`).

Rules: a user creates a TMP group (one at the start of every run, at most `MAX_GROUPS`), adds or removes
members, sends to a group, reads it, pages its history; the inherited unread rule checks group counts too.
The model predicts the cluster's documented outcome of each (runtime/storage/sqlite/groups.py, messages.py):

- member changes: the creator may make any change (even after leaving the group); any current member may ADD
  to a TMP group; everything else is refused with ACCESS_DENIED and changes nothing. A successful change
  answers with the members after it and the users it really added or removed, and every connection of
  every current or changed user but the actor's sending one hears a CID_GROUP_CHANGE_MEMBER_NOTIFY;
- sending: only a current member may send (a refused send is acked with msg id 0: nothing is stored, the
  group counter does not move, nothing is delivered); an accepted one gets the next id of the group counter
  and is pushed exactly once, in msg-id order, to the main connection of every online member but the sender;
- visibility: a member (re)joining sees only messages after the join (history floor) and starts with nothing
  unread; sending reads the group for the sender (TeamTalk copies the counter into the sender's snapshot);
- unread: messages of others after max(read position, join floor), for current members only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize, precondition, rule

from runtime.fuzz.chat import USERS, ChatClient, ChatMachine, Conv
from runtime.services.links import ResultCode

MAX_GROUPS = 2
OK, ACCESS_DENIED = ResultCode.OK, ResultCode.ACCESS_DENIED
HISTORY_PAGE = 200

member_sets = st.frozensets(st.sampled_from(USERS), min_size=1)


@dataclass
class GroupModel:
    """What the model believes about one group created in this run."""

    gid: int
    creator: str
    members: set[str]
    msgs: list[tuple[str, int]] = field(default_factory=list)  # (sender, msg id), ascending
    floor: dict[str, int] = field(default_factory=dict)  # member -> visible_from (last id when they joined)
    read: dict[str, int] = field(default_factory=dict)  # member -> read position

    @property
    def last(self) -> int:
        return self.msgs[-1][1] if self.msgs else 0

    def join(self, user: str) -> None:
        self.members.add(user)
        self.floor[user] = self.read[user] = self.last

    def unread(self, user: str) -> int:
        if user not in self.members:
            return 0
        floor = max(self.read.get(user, 0), self.floor.get(user, 0))
        return sum(1 for frm, mid in self.msgs if frm != user and mid > floor)

    def visible(self, user: str) -> list[int]:
        """History a user may page through, newest first (nothing for a non-member)."""
        if user not in self.members:
            return []
        return [mid for _, mid in reversed(self.msgs) if mid > self.floor.get(user, 0)]


class GroupChatMachine(ChatMachine):
    """`ChatMachine` plus TMP groups (see the module doc for the model)."""

    # Runs (examples) at least this long: with the 1:1 and the group rules, the CI profile's 12 steps rarely
    # reach a refused member change or a group read. A step is a few local round trips (~5 ms).
    MIN_STEPS = 50

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[GroupModel] = []
        enums = self.STACK.enums
        self.add = int(enums.GroupModifyType.GROUP_MODIFY_TYPE_ADD)
        self.delete = int(enums.GroupModifyType.GROUP_MODIFY_TYPE_DEL)

    def client(self, user: str) -> ChatClient:
        return self.online[user] if user in self.online else self._login(user)

    # -- rules -----------------------------------------------------------------------------------------------
    @initialize(creator=st.sampled_from(USERS), members=st.frozensets(st.sampled_from(USERS)))
    def first_group(self, creator: str, members: frozenset[str]) -> None:
        """Every run starts with a group, so the group rules are enabled from the first step."""
        self.do("create", creator=creator, members=members)

    @precondition(lambda self: bool(self.able("CID_GROUP_CREATE_REQUEST")) and len(self.groups) < MAX_GROUPS)
    @rule(data=st.data(), members=st.frozensets(st.sampled_from(USERS)))
    def create_group(self, data: st.DataObject, members: frozenset[str]) -> None:
        creator = data.draw(st.sampled_from(self.able("CID_GROUP_CREATE_REQUEST")), label="creator")
        self.do("create", creator=creator, members=members)

    def _create(self, creator: str, members: frozenset[str] | list[str]) -> None:
        client = self.client(creator)
        rsp = client.call(
            "CID_GROUP_CREATE_REQUEST",
            user_id=client.user_id,
            group_type=self.STACK.enums.GroupType.GROUP_TYPE_TMP,
            group_name=f"fuzz-{creator}",
            group_avatar="",
            member_id_list=[self.ids[u] for u in sorted(members)],
        )
        assert rsp.result_code == OK, f"{creator}: TMP group creation refused ({rsp.result_code})"
        assert rsp.group_id > 0 and rsp.group_id not in {g.gid for g in self.groups}, rsp
        group = GroupModel(rsp.group_id, creator, set())
        for user in {creator, *members}:
            group.join(user)
        got = sorted(rsp.user_id_list)
        assert got == self._ids(group.members), f"group {group.gid}: created with {got}, want {group.members}"
        self.groups.append(group)
        self._wait_change_notify(group, self.add, set(group.members))

    @precondition(lambda self: bool(self.able("CID_GROUP_CHANGE_MEMBER_REQUEST")) and bool(self.groups))
    @rule(data=st.data(), add=st.booleans(), users=member_sets)
    def change_members(self, data: st.DataObject, add: bool, users: frozenset[str]) -> None:
        actor = data.draw(st.sampled_from(self.able("CID_GROUP_CHANGE_MEMBER_REQUEST")), label="actor")
        group = data.draw(st.sampled_from(self.groups), label="group")
        self.do("change", actor=actor, group_index=self.groups.index(group), add=add, users=users)

    def _change(self, actor: str, group_index: int, add: bool, users: frozenset[str] | list[str]) -> None:
        group = self.groups[group_index]
        users = frozenset(users)
        modify = self.add if add else self.delete
        allowed = actor == group.creator or (modify == self.add and actor in group.members)
        client = self.online[actor]
        rsp = client.call(
            "CID_GROUP_CHANGE_MEMBER_REQUEST",
            user_id=client.user_id,
            change_type=modify,
            group_id=group.gid,
            member_id_list=[self.ids[u] for u in sorted(users)],
        )
        what = f"{actor} {'adds' if add else 'removes'} {sorted(users)} in group {group.gid}"
        if not allowed:
            assert rsp.result_code == ACCESS_DENIED, f"{what}: result {rsp.result_code}, want ACCESS_DENIED"
            return
        assert rsp.result_code == OK, f"{what}: refused ({rsp.result_code})"
        if modify == self.add:
            changed = {u for u in users if u not in group.members}
            for user in changed:
                group.join(user)
        else:
            changed = set(users & group.members)
            group.members -= changed
        assert sorted(rsp.cur_user_id_list) == self._ids(group.members), f"{what}: members {rsp}"
        assert sorted(rsp.chg_user_id_list) == self._ids(changed), f"{what}: changed {rsp}"
        self._wait_change_notify(group, modify, changed)

    @precondition(lambda self: bool(self.able("CID_MSG_DATA")) and bool(self.groups))
    @rule(data=st.data(), text=st.binary(min_size=1, max_size=64))
    def group_send(self, data: st.DataObject, text: bytes) -> None:
        sender = data.draw(st.sampled_from(self.able("CID_MSG_DATA")), label="sender")
        group = data.draw(st.sampled_from(self.groups), label="group")
        self.do("group_send", sender=sender, group_index=self.groups.index(group), text=text)

    def _group_send(self, sender: str, group_index: int, text: bytes) -> None:
        client = self.online[sender]
        group = self.groups[group_index]
        ack = client.call(
            "CID_MSG_DATA",
            from_user_id=client.user_id,
            to_session_id=group.gid,
            msg_id=0,
            create_time=0,
            msg_type=self.STACK.enums.MsgType.MSG_TYPE_GROUP_TEXT,
            msg_data=text,
        )
        assert (ack.session_type, ack.session_id) == (self.group, group.gid), f"group ack names {ack}"
        if sender not in group.members:
            assert ack.msg_id == 0, f"{sender} (not a member) sent to group {group.gid}: acked {ack.msg_id}"
            self._check_latest(group)
            return
        want = group.last + 1
        assert ack.msg_id == want, f"{sender} -> group {group.gid}: msg id {ack.msg_id}, want {want}"
        group.msgs.append((sender, ack.msg_id))
        group.read[sender] = ack.msg_id
        for user in group.members:
            if user in self.online and user != sender:
                self.owe(user, (self.group, group.gid), ack.msg_id)

    @precondition(lambda self: bool(self._readers()))
    @rule(data=st.data())
    def group_read(self, data: st.DataObject) -> None:
        choices = self._readers()
        user, group = data.draw(st.sampled_from(choices), label="reader")
        self.do("group_read", user=user, group_index=self.groups.index(group))

    def _group_read(self, user: str, group_index: int) -> None:
        group = self.groups[group_index]
        upto = group.last
        self.online[user].send(
            "CID_MSG_READ_ACK",
            user_id=self.ids[user],
            session_id=group.gid,
            msg_id=upto,
            session_type=self.group,
        )
        group.read[user] = max(group.read.get(user, 0), upto)
        self.online[user].wait_read_notify(self.group, group.gid, upto)

    @precondition(lambda self: bool(self.able("CID_MSG_LIST_REQUEST")) and any(g.msgs for g in self.groups))
    @rule(data=st.data())
    def group_history(self, data: st.DataObject) -> None:
        """Join-time visibility: a member pages back only to the messages after their (last) join; a
        non-member sees nothing."""
        user = data.draw(st.sampled_from(self.able("CID_MSG_LIST_REQUEST")), label="user")
        group = data.draw(st.sampled_from([g for g in self.groups if g.msgs]), label="group")
        self.do("group_history", user=user, group_index=self.groups.index(group))

    def _group_history(self, user: str, group_index: int) -> None:
        group = self.groups[group_index]
        rsp = self.online[user].call(
            "CID_MSG_LIST_REQUEST",
            user_id=self.ids[user],
            session_type=self.group,
            session_id=group.gid,
            msg_id_begin=0,
            msg_cnt=HISTORY_PAGE,
        )
        got = [m.msg_id for m in rsp.msg_list]
        want = group.visible(user)
        assert got == want, f"{user}: history of group {group.gid} is {got}, the model says {want}"

    # -- model -----------------------------------------------------------------------------------------------
    def check_unread(self, user: str, server: dict[Conv, int]) -> None:
        super().check_unread(user, server)
        for group in self.groups:
            got = server.get((self.group, group.gid), 0)
            want = group.unread(user)
            assert got == want, f"{user}: unread in group {group.gid} is {got}, the model says {want}"

    def _readers(self) -> list[tuple[str, GroupModel]]:
        able = self.able("CID_MSG_READ_ACK")
        return [(u, g) for g in self.groups for u in sorted(g.members) if u in able and g.unread(u)]

    def _ids(self, users: set[str]) -> list[int]:
        return sorted(self.ids[u] for u in users)

    def _wait_change_notify(self, group: GroupModel, modify: int, changed: set[str]) -> None:
        """Every online current or changed user's second device hears of the change (the actor's too)."""
        info = self.STACK.command("CID_GROUP_CHANGE_MEMBER_NOTIFY")
        want = (modify, group.gid, self._ids(group.members), self._ids(changed))
        for user in sorted(group.members | changed):
            if user not in self.online:
                continue
            frame = self.online[user].observer.wait_for(lambda f: f.command_id == info.command_id)
            note: Any = info.message_class.FromString(bytes(frame.body))
            got = (
                note.change_type,
                note.group_id,
                sorted(note.cur_user_id_list),
                sorted(note.chg_user_id_list),
            )
            assert got == want, f"{user}: member-change notify {got}, want {want}"

    def _check_latest(self, group: GroupModel) -> None:
        """After a refused send: the group's latest id, as an online member sees it, did not move."""
        able = self.able("CID_MSG_GET_LATEST_MSG_ID_REQ")
        member = next((u for u in sorted(group.members) if u in able), None)
        if member is None:
            return
        rsp = self.online[member].call(
            "CID_MSG_GET_LATEST_MSG_ID_REQ",
            user_id=self.ids[member],
            session_type=self.group,
            session_id=group.gid,
        )
        assert rsp.latest_msg_id == group.last, (
            f"group {group.gid}: latest msg id {rsp.latest_msg_id} after a refused send, want {group.last}"
        )

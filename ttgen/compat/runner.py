"""CLI compat layer: run old client vs new server and new client vs old server over real frames on loopback.

For each pairing a real `runtime.transport` server of one version listens on 127.0.0.1 (port 0) with a real
`runtime.dispatch.Dispatcher` over that version's registry and an echo service; clients of the other version
connect with `runtime.transport.connect`, one connection per probe so that a failure cannot spill over. Each
probe sends every sample variant of its message (`ttgen.compat.samples.variants`) in turn.

* request leg (c2s/both commands of the client): the client's sample is framed with the client's ids, decoded
  by the server's classes, echoed back by the server (re-encoded with the server's classes, so unknown fields
  travel along), and decoded by the client's classes; where the client's version has a reply for the command,
  the server's reply must arrive under the id the client waits for. What the server saw, what came back and
  the reply are compared field by field (by name and number) with what was sent.
* push leg (s2c/both commands of the server): the server's sample is pushed through the dispatcher (after the
  client opted in, for extension commands) and decoded by the client's classes. A push the client knows under
  another id is renumbered, one under another service id moved, one the newer client lacks removed: broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterable
from pathlib import Path

from google.protobuf.message import Message

from codegen.model import Spec
from runtime.connection import HEARTBEAT_COMMAND_ID, Kind
from runtime.dispatch import Context, Dispatcher
from runtime.framing import Frame
from runtime.registry import CommandInfo, Registry, UnknownCommand
from runtime.stages.input import missing_fields
from runtime.transport import Link, connect, serve
from ttgen.compat.report import NEW_CLIENT, OLD_CLIENT, CompatReport, Exchange, Verdict
from ttgen.compat.samples import Comparison, compare, sample, variants
from ttgen.compat.stacks import VersionStack, build_stack

HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 5.0


class EchoService:
    """A server of one version that answers every client command with the message it decoded, and with the
    command's reply (this version's sample of the reply message) where the command has one."""

    def __init__(self, stack: VersionStack) -> None:
        self.__mapping__ = {info.command_id: "echo" for info in stack.registry if info.from_client}
        self.seen: dict[tuple[int, int], Message] = {}  # (command id, seq) -> decoded request
        self.links: asyncio.Queue[Link] = asyncio.Queue()  # server sides of client connections, in order
        self.replies: dict[str, Message] = {}  # command name -> the reply this server answers with
        for info in stack.registry:
            if info.from_client and info.reply is not None:
                self.replies[info.name] = sample(stack.registry.by_name(info.reply).message_class)

    def on_connect(self, link: Link) -> None:
        self.links.put_nowait(link)

    async def echo(self, ctx: Context, msg: Message) -> Message | None:
        self.seen[(ctx.info.command_id, ctx.seq)] = msg
        ctx.send(ctx.info.name, msg, ctx.seq)
        return self.replies.get(ctx.info.name)  # the dispatcher sends it as the reply, with the request's seq


Received = tuple[int, int, bytes]  # (service id, command id, body) of one frame as it arrived


class _Collector:
    """The client side's frame handler: keeps every admitted frame by (command id, seq), and wakes waiters."""

    def __init__(self) -> None:
        self.frames: dict[tuple[int, int], Received] = {}
        self.arrived = asyncio.Event()
        self.reason = ""

    def connection_made(self, link: Link) -> None:
        pass

    def frames_received(self, link: Link, frames: Iterable[tuple[Frame, CommandInfo]]) -> None:
        for frame, _info in frames:
            key = (frame.command_id, frame.seq)
            self.frames[key] = (frame.service_id, frame.command_id, bytes(frame.body))
        self.arrived.set()

    def connection_lost(self, link: Link, reason: str) -> None:
        self.reason = reason or "connection lost"
        self.arrived.set()

    async def wait_for(self, keys: set[tuple[int, int]], timeout: float) -> bool:
        """Wait until a frame arrived for every (command id, seq) in `keys`; False on timeout or close."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not keys <= self.frames.keys():
            if self.reason:
                return False
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return keys <= self.frames.keys()
        return True

    def take(self, key: tuple[int, int]) -> Received | None:
        return self.frames.pop(key, None)


class _Outcome:
    """The findings of one exchange over all its samples: broken notes, lost notes and carried fields."""

    def __init__(self) -> None:
        self.broken: list[str] = []
        self.lost: list[str] = []
        self.carried: list[str] = []
        self._seen: set[str] = set()

    def _add(self, into: list[str], variant: str, notes: Iterable[str]) -> None:
        for note in notes:
            if note not in self._seen:  # the same finding from several samples is reported once
                self._seen.add(note)
                into.append(note if variant == "full" else f"[{variant}] {note}")

    def add(self, variant: str, prefix: str, comparison: Comparison) -> None:
        self._add(self.broken, variant, [prefix + n for n in comparison.broken])
        self._add(self.lost, variant, [prefix + n for n in comparison.lost])
        for name in comparison.carried:
            if name not in self.carried:
                self.carried.append(name)

    def fail(self, variant: str, note: str) -> None:
        self._add(self.broken, variant, [note])

    @property
    def verdict(self) -> Verdict:
        return "broken" if self.broken else "lossy" if self.lost else "ok"


def decode(cls: type[Message], body: bytes) -> tuple[Message | None, str]:
    """Parse `body` as the runtime's dispatcher does: a body that does not parse or lacks a required field is
    refused (the runtime closes the connection). Returns the message, or None and why."""
    try:
        msg = cls.FromString(body)
    except Exception as exc:  # protobuf raises several types on bodies it cannot take
        return None, f"cannot decode it: {exc}"
    if not msg.IsInitialized():
        return None, f"refuses it: required fields missing: {', '.join(missing_fields(msg))}"
    return msg, ""


class Pairing:
    """One running server of version `server` probed by clients of version `client`."""

    def __init__(self, client: VersionStack, server: VersionStack, name: str, timeout: float) -> None:
        self.client, self.server, self.name, self.timeout = client, server, name, timeout
        self.service = EchoService(server)
        self.dispatcher = Dispatcher(server.registry, self.service)
        self._seq = 0

    async def run(self, only: set[str] | None) -> list[Exchange]:
        srv = await serve(HOST, 0, self.dispatcher.handler_factory, registry=self.server.registry)
        try:
            out: list[Exchange] = []
            for info in self.client.registry:
                if info.from_client and (only is None or info.name in only):
                    out.append(await self.request(info, srv.port))
            for info in self.server.registry:
                if info.to_client and (only is None or info.name in only):
                    out.append(await self.push(info, srv.port))
            return out
        finally:
            await srv.shutdown(drain_timeout=self.timeout)

    def _exchange(
        self,
        info: CommandInfo,
        leg: str,
        verdict: Verdict,
        detail: Iterable[str] = (),
        carried: Iterable[str] = (),
    ) -> Exchange:
        return Exchange(info.name, info.command_id, self.name, leg, verdict, tuple(detail), tuple(carried))

    def _result(self, info: CommandInfo, leg: str, outcome: _Outcome) -> Exchange:
        return self._exchange(info, leg, outcome.verdict, [*outcome.broken, *outcome.lost], outcome.carried)

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFF + 1
        return self._seq

    async def _connect(self, port: int) -> tuple[Link, _Collector, Link]:
        """A client connection, its frame collector, and the server's side of it."""
        collector = _Collector()
        link = await connect(HOST, port, collector, registry=self.client.registry, kind=Kind.CLIENT)
        server_link = await asyncio.wait_for(self.service.links.get(), self.timeout)
        return link, collector, server_link

    async def _close(self, link: Link) -> None:
        link.close("probe done")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(link.closed), self.timeout)

    def _no_answer(self, server_link: Link, collector: _Collector) -> str:
        """Why no answer came: the server's close reason (set before its socket closes), or silence."""
        reason = server_link.conn.close_reason if server_link.conn is not None else None
        if reason:
            return f"the server closed the connection: {reason}"
        if collector.reason:
            return f"the connection closed: {collector.reason}"
        return f"no answer within {self.timeout}s"

    def _by_name(self, registry: Registry, name: str) -> CommandInfo | None:
        try:
            return registry.by_name(name)
        except UnknownCommand:
            return None

    # -- request leg -----------------------------------------------------------------------------------------
    async def request(self, info: CommandInfo, port: int) -> Exchange:
        """Send each sample of the client's `info`; the server echoes it and answers with its reply."""
        if info.command_id == HEARTBEAT_COMMAND_ID:
            heartbeat = "heartbeats are answered by the connection layer"
            return self._exchange(info, "request", "skipped", [heartbeat])
        target = self.server.registry.get(info.command_id)
        namesake = self._by_name(self.server.registry, info.name)
        if namesake is not None and namesake.command_id != info.command_id:
            renumbered = (
                f"renumbered: the client sends {info.name} as 0x{info.command_id:04x}, "
                f"the server takes it as 0x{namesake.command_id:04x}"
            )
            return self._exchange(info, "request", "broken", [renumbered])
        if target is None:
            missing = f"the server has no command 0x{info.command_id:04x}"
            return self._exchange(info, "request", "broken", [missing])
        if not target.from_client:
            return self._exchange(
                info,
                "request",
                "broken",
                [f"the server takes {target.name} only from servers ({target.direction})"],
            )
        outcome = _Outcome()
        if target.service_id != info.service_id:
            outcome.fail(
                "full",
                f"moved: the client frames it under service {info.service_id}, "
                f"the server declares service {target.service_id}",
            )
        expected_reply = self._by_name(self.client.registry, info.reply) if info.reply else None
        link, collector, server_link = await self._connect(port)
        try:
            for variant, sent in variants(info.message_class):
                if not await self._request_once(
                    info, target, expected_reply, variant, sent, link, collector, server_link, outcome
                ):
                    break  # the connection is gone: later samples cannot be probed on it
            return self._result(info, "request", outcome)
        finally:
            await self._close(link)

    async def _request_once(
        self,
        info: CommandInfo,
        target: CommandInfo,
        expected_reply: CommandInfo | None,
        variant: str,
        sent: Message,
        link: Link,
        collector: _Collector,
        server_link: Link,
        outcome: _Outcome,
    ) -> bool:
        """One sample: send, wait for the echo (and the reply the client waits for), compare. False when the
        connection is closed afterwards."""
        seq = self._next_seq()
        link.send_frame(info.service_id, info.command_id, seq, sent.SerializeToString())
        want = {(info.command_id, seq)}
        if expected_reply is not None:
            want.add((expected_reply.command_id, seq))
        await collector.wait_for(want, self.timeout)
        echo = collector.take((info.command_id, seq))
        if echo is None:
            outcome.fail(variant, self._no_answer(server_link, collector))
            return False
        seen = self.service.seen.pop((target.command_id, seq), None)
        if seen is None:
            outcome.fail(variant, "the server answered without decoding the request")
        else:
            outcome.add(variant, "server saw ", compare(sent, seen))
        echoed, why = decode(info.message_class, echo[2])
        if echoed is None:
            outcome.fail(variant, f"the client {why} (the echo)")
        else:
            outcome.add(variant, "round trip: ", compare(sent, echoed))
        if expected_reply is not None and not self._check_reply(
            target, expected_reply, seq, variant, collector, outcome
        ):
            return False  # no reply: every further sample would wait out the timeout for the same finding
        return not collector.reason

    def _check_reply(
        self,
        target: CommandInfo,
        expected: CommandInfo,
        seq: int,
        variant: str,
        collector: _Collector,
        outcome: _Outcome,
    ) -> bool:
        """The reply the client waits for must arrive with the request's seq and decode (False: none came)."""
        reply = collector.take((expected.command_id, seq))
        others = sorted(cid for cid, s in collector.frames if s == seq)
        for cid in others:
            collector.take((cid, seq))
        if reply is None:
            instead = ", ".join(f"0x{cid:04x}" for cid in others)
            why = self._why_no_reply(target, expected)
            outcome.fail(
                variant,
                f"no reply {expected.name} (0x{expected.command_id:04x}) arrived: {why}"
                + (f" (got {instead})" if instead else ""),
            )
            return False
        got, why = decode(expected.message_class, reply[2])
        if got is None:
            outcome.fail(variant, f"the client {why} (reply {expected.name})")
            return True
        sent_reply = self.service.replies.get(target.name)
        if sent_reply is not None:
            outcome.add(variant, f"reply {expected.name}: ", compare(sent_reply, got))
        return True

    def _why_no_reply(self, target: CommandInfo, expected: CommandInfo) -> str:
        """What the server's version says about the reply the client waited for in vain."""
        said = target.reply
        if said is None:
            return "the server sends no reply"
        if said != expected.name:
            return f"the server answers with {said}"
        sent_as = self.server.registry.by_name(said).command_id
        if sent_as != expected.command_id:
            return f"the server sends {said} as 0x{sent_as:04x}"
        return f"nothing within {self.timeout}s"

    # -- push leg --------------------------------------------------------------------------------------------
    def _opt_in_command(self) -> CommandInfo | None:
        """A command the client sends that the server counts as opting in to extension pushes."""
        for info in self.client.registry:
            target = self.server.registry.get(info.command_id)
            if (
                info.from_client
                and target is not None
                and target.from_client
                and target.command_id in self.dispatcher.extension_commands
            ):
                return info
        return None

    async def _opt_in(self, link: Link, collector: _Collector) -> str:
        """Send an extension command, as an extension-aware client does, and wait until the server took it.
        Returns why that failed ("" on success)."""
        opt_in = self._opt_in_command()
        if opt_in is None:
            return "the client has no extension command to opt in with"
        seq = self._next_seq()
        link.send_frame(
            opt_in.service_id, opt_in.command_id, seq, sample(opt_in.message_class).SerializeToString()
        )
        if not await collector.wait_for({(opt_in.command_id, seq)}, self.timeout):
            return f"opting in with {opt_in.name} failed: {collector.reason or 'no answer'}"
        for key in [k for k in collector.frames if k[1] == seq]:
            collector.take(key)
        return ""

    async def push(self, info: CommandInfo, port: int) -> Exchange:
        """Push each sample of the server's `info` to a client of the other version; compare what arrived."""
        if info.command_id == HEARTBEAT_COMMAND_ID:
            return self._exchange(
                info, "push", "skipped", ["heartbeats are answered by the connection layer"]
            )
        target = self.client.registry.get(info.command_id)
        namesake = self._by_name(self.client.registry, info.name)
        if namesake is not None and namesake.command_id != info.command_id:
            renumbered = (
                f"renumbered: the server pushes {info.name} as 0x{info.command_id:04x}, "
                f"the client knows it as 0x{namesake.command_id:04x}"
            )
            return self._exchange(info, "push", "broken", [renumbered])
        if target is None:
            unknown = f"the client has no command 0x{info.command_id:04x}"
            if self.name == NEW_CLIENT:  # the newer client dropped a push the older server still sends
                return self._exchange(info, "push", "broken", [f"removed: {unknown}"])
            return self._exchange(info, "push", "ignored", [f"{unknown} (added after it)"])
        outcome = _Outcome()
        link, collector, server_link = await self._connect(port)
        try:
            if info.command_id in self.dispatcher.extension_commands:
                failed = await self._opt_in(link, collector)
                if failed:
                    outcome.fail("full", failed)
                    return self._result(info, "push", outcome)
            for variant, sent in variants(info.message_class):
                if not await self._push_once(info, target, variant, sent, collector, server_link, outcome):
                    break
            return self._result(info, "push", outcome)
        finally:
            await self._close(link)

    async def _push_once(
        self,
        info: CommandInfo,
        target: CommandInfo,
        variant: str,
        sent: Message,
        collector: _Collector,
        server_link: Link,
        outcome: _Outcome,
    ) -> bool:
        if not self.dispatcher.send(server_link, info.name, sent, 0):
            outcome.fail(variant, "the server did not send it (connection closing, or no extension opt-in)")
            return False
        key = (info.command_id, 0)
        if not await collector.wait_for({key}, self.timeout):
            outcome.fail(variant, f"nothing arrived: {collector.reason or 'timeout'}")
            return False
        service_id, _cid, body = collector.frames.pop(key)
        if service_id != target.service_id:
            outcome.fail(
                variant,
                f"moved: it arrives under service {service_id}, "
                f"the client expects service {target.service_id}",
            )
        got, why = decode(target.message_class, body)
        if got is None:
            outcome.fail(variant, f"the client {why}")
            return True
        outcome.add(variant, "client saw ", compare(sent, got))
        return True


async def run_stacks(
    old: VersionStack,
    new: VersionStack,
    *,
    commands: set[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> CompatReport:
    """Probe both pairings of two loaded stacks; the report lists old-client exchanges first."""
    report = CompatReport(old.spec.version, new.spec.version)
    for client, server, name in ((old, new, OLD_CLIENT), (new, old, NEW_CLIENT)):
        pairing = Pairing(client, server, name, timeout)
        report.exchanges.extend(await pairing.run(commands))
    return report


async def run_compat_async(
    old: Spec,
    new: Spec,
    *,
    workdir: Path | None = None,
    commands: set[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> CompatReport:
    """Generate both stacks side by side (under `workdir`, or a temporary folder) and probe them."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ttgen-compat-")))
        root = workdir
        old_stack = build_stack(old, root / "old", "old")
        new_stack = build_stack(new, root / "new", "new")
        return await run_stacks(old_stack, new_stack, commands=commands, timeout=timeout)


def run_compat(
    old: Spec,
    new: Spec,
    *,
    workdir: Path | None = None,
    commands: set[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> CompatReport:
    """Synchronous entry point: run the cross-version matrix of two spec versions on a fresh event loop."""
    return asyncio.run(run_compat_async(old, new, workdir=workdir, commands=commands, timeout=timeout))

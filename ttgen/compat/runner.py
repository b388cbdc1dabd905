"""CLI compat layer: run old client vs new server and new client vs old server over real frames on loopback.

For each pairing a real `runtime.transport` server of one version listens on 127.0.0.1 (port 0) with a real
`runtime.dispatch.Dispatcher` over that version's registry and an echo service; clients of the other version
connect with `runtime.transport.connect`, one connection per probe so that a failure cannot spill over.

* request leg (c2s/both commands of the client): the client's sample is framed with the client's ids, decoded
  by the server's classes, echoed back by the server (re-encoded with the server's classes, so unknown fields
  travel along), and decoded by the client's classes. What the server saw and what came back are compared
  field by field with what was sent.
* push leg (s2c commands of the server): the server's sample is pushed and decoded by the client's classes.
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
from runtime.registry import CommandInfo
from runtime.transport import Link, connect, serve
from ttgen.compat.report import NEW_CLIENT, OLD_CLIENT, CompatReport, Exchange, Verdict
from ttgen.compat.samples import compare, sample
from ttgen.compat.stacks import VersionStack, build_stack

HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 5.0


class EchoService:
    """A server of one version that answers every client command with the message it decoded."""

    def __init__(self, stack: VersionStack) -> None:
        self.__mapping__ = {info.command_id: "echo" for info in stack.registry if info.from_client}
        self.seen: dict[tuple[int, int], Message] = {}  # (command id, seq) -> decoded request
        self.links: asyncio.Queue[Link] = asyncio.Queue()  # server sides of client connections, in order

    def on_connect(self, link: Link) -> None:
        self.links.put_nowait(link)

    async def echo(self, ctx: Context, msg: Message) -> Message | None:
        self.seen[(ctx.info.command_id, ctx.seq)] = msg
        ctx.send(ctx.info.name, msg, ctx.seq)
        return None


class _Collector:
    """The client side's frame handler: queues every admitted frame, and None when the connection ends."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()  # (command id, body)
        self.reason = ""

    def connection_made(self, link: Link) -> None:
        pass

    def frames_received(self, link: Link, frames: Iterable[tuple[Frame, CommandInfo]]) -> None:
        for frame, _info in frames:
            self.frames.put_nowait((frame.command_id, bytes(frame.body)))

    def connection_lost(self, link: Link, reason: str) -> None:
        self.reason = reason
        self.frames.put_nowait(None)


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
                if info.direction == "s2c" and (only is None or info.name in only):
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
        return Exchange(
            info.name,
            info.command_id,
            self.name,
            leg,
            verdict,
            tuple(detail),
            tuple(carried),
        )

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

    def _no_answer(self, server_link: Link) -> str:
        """Why no answer came: the server's close reason (set before its socket closes), or silence."""
        reason = server_link.conn.close_reason if server_link.conn is not None else None
        if reason:
            return f"the server closed the connection: {reason}"
        return f"no answer within {self.timeout}s"

    async def _next_frame(self, collector: _Collector) -> tuple[int, bytes] | None:
        try:
            return await asyncio.wait_for(collector.frames.get(), self.timeout)
        except TimeoutError:
            return None

    async def request(self, info: CommandInfo, port: int) -> Exchange:
        """Send the client's sample of `info`, let the server echo it, compare both views."""
        if info.command_id == HEARTBEAT_COMMAND_ID:
            heartbeat = "heartbeats are answered by the connection layer"
            return self._exchange(info, "request", "skipped", [heartbeat])
        target = self.server.registry.get(info.command_id)
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
        sent = sample(info.message_class)
        self._seq = self._seq % 0xFFFF + 1
        seq = self._seq
        link, collector, server_link = await self._connect(port)
        try:
            link.send_frame(info.service_id, info.command_id, seq, sent.SerializeToString())
            frame = await self._next_frame(collector)
            if frame is None:
                return self._exchange(info, "request", "broken", [self._no_answer(server_link)])
            detail, carried = self._server_view(target, seq, sent)
            try:
                echoed = info.message_class.FromString(frame[1])
            except Exception as exc:  # protobuf raises several types on bodies it cannot take
                failure = f"client cannot decode the echo: {exc}"
                return self._exchange(info, "request", "broken", [*detail, failure])
            round_trip, _ = compare(sent, echoed)
            detail += [f"round trip: {d}" for d in round_trip]
            return self._exchange(info, "request", "lossy" if detail else "ok", detail, carried)
        finally:
            await self._close(link)

    def _server_view(self, target: CommandInfo, seq: int, sent: Message) -> tuple[list[str], list[str]]:
        seen = self.service.seen.pop((target.command_id, seq), None)
        if seen is None:
            return ["the server answered without decoding the request"], []
        diffs, carried = compare(sent, seen)
        return [f"server saw {d}" for d in diffs], carried

    async def push(self, info: CommandInfo, port: int) -> Exchange:
        """Push the server's sample of `info` to a client of the other version and compare what it decoded."""
        target = self.client.registry.get(info.command_id)
        if target is None:
            unknown = f"the client has no command 0x{info.command_id:04x}"
            return self._exchange(info, "push", "ignored", [unknown])
        sent = sample(info.message_class)
        link, collector, server_link = await self._connect(port)
        try:
            self.dispatcher.send(server_link, info.name, sent, 0)
            frame = await self._next_frame(collector)
            if frame is None:
                nothing = f"nothing arrived: {collector.reason or 'timeout'}"
                return self._exchange(info, "push", "broken", [nothing])
            try:
                got = target.message_class.FromString(frame[1])
            except Exception as exc:
                return self._exchange(info, "push", "broken", [f"client cannot decode it: {exc}"])
            diffs, carried = compare(sent, got)
            seen = [f"client saw {d}" for d in diffs]
            return self._exchange(info, "push", "lossy" if diffs else "ok", seen, carried)
        finally:
            await self._close(link)


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

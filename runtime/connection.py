"""Runtime connection layer: the sans-IO per-connection state machine (auth gate, heartbeats, deadlines).

Like h11, a `Connection` takes bytes and the current time and returns frames to dispatch; it queues bytes to
send (`data_to_send`). It never touches a socket or a clock: `now` is passed in, so tests need no sleeps.

`LinkConnection` is the same machine for a server-to-server link (`Kind.SERVER_LINK`), with the internal-link
protocol on top. Internal links speak the client protocol's 16-byte frames, with flag bits of their own
(TeamTalk leaves `flag` 0, and internal links never reach a client):

- `FLAG_REQUEST`: the sender expects exactly one `FLAG_RESPONSE` frame carrying the same correlation id
  (`LinkConnection.request`: the callback gets the answer, or None if the link is lost first);
- `FLAG_RESPONSE`: the answer to a request; the correlation id is `seq | reserved << 16` (32 bits, so a
  pipelined link never reuses an id while it is still outstanding);
- `FLAG_RELAY`: the body is a relay envelope (`pack_relay`): the target user ids, then the inner message body.
  A router reads the targets without parsing the protobuf body; a service that gets a relayed request acts
  for its first target (the user the sending msg server authenticated: `ctx.user_id`).
- `FLAG_BATCH` (with `FLAG_RESPONSE`): empty answers to several requests in one frame, the body being their
  correlation ids (u32 each). `confirm` queues such an answer: every confirmation queued before the output is
  next taken leaves in one frame, where one frame each cost both ends a header;
- `FLAG_AUTH`: the handshake that opens every link of a cluster (`runtime.auth.link_handshake`): both ends
  prove they hold the cluster secret before anything else is accepted or sent (frames queued meanwhile wait);
  a peer that fails, sends anything else first, or takes longer than `HANDSHAKE_TIMEOUT`, is refused: the
  connection closes with `refused` set, and the `LinkAuth` counts it.

Heartbeats (`CID_OTHER_HEARTBEAT`) are sent after 5 s without sending and never dispatched; a link silent for
30 s closes (PROTOCOL.md 1.2). `runtime.transport.InternalLink` drives a `LinkConnection` over TCP.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from runtime.auth.link_handshake import LinkAuthError, LinkHandshake
from runtime.auth.link_seal import SEAL_POLICIES, LinkSealer, SealError, wants_seal
from runtime.errors import FrameError, InvalidTransition
from runtime.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    append_frame,
)
from runtime.registry import CommandInfo, Registry
from runtime.stages.input import RATE_ACTIONS, TokenBucket
from runtime.stages.policy import choice, parse_rate

log = logging.getLogger("runtime.connection")
_pack_header = HEADER.pack

HEARTBEAT_SERVICE_ID = 7
HEARTBEAT_COMMAND_ID = 0x0701
HEARTBEAT_MAX_ECHO = 64  # heartbeat body echoed at most (when the spec's heartbeat policy sets no max_bytes)

# The internal-link protocol (see the module docstring).
FLAG_AUTH = 0x0800
FLAG_RELAY = 0x1000
FLAG_BATCH = 0x2000
FLAG_REQUEST = 0x4000
FLAG_RESPONSE = 0x8000
AUTH_HELLO, AUTH_PROOF = 0x0001, 0x0002  # command ids of the two FLAG_AUTH frames
MAX_HANDSHAKE_FRAME = 256  # HELLO and PROOF are far smaller
HANDSHAKE_TIMEOUT = 5.0  # seconds a link peer has to complete the handshake (read when a link opens)
MAX_LINK_FRAME = 16 << 20
BROADCAST = 0xFFFF  # relay target count meaning "every msg server, every user"


class State(enum.Enum):
    """Connection states; see `TRANSITIONS`."""

    HANDSHAKE = "handshake"  # open, not (yet) authenticated
    AUTHENTICATED = "authenticated"
    CLOSING = "closing"  # close decided; queued bytes may still drain
    CLOSED = "closed"


class Event(enum.Enum):
    """Inputs that move the state machine."""

    AUTHENTICATE = "authenticate"
    CLOSE = "close"  # local decision: timeout, protocol violation, logout, shutdown
    CONNECTION_LOST = "connection_lost"


class Kind(enum.Enum):
    """Which end of which link a connection is; it selects the heartbeat and timeout rules."""

    CLIENT_SESSION = "client_session"  # the server's side of a client connection
    SERVER_LINK = "server_link"  # either side of a server-to-server link
    CLIENT = "client"  # the client's side of its connection to a server


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.HANDSHAKE, Event.AUTHENTICATE): State.AUTHENTICATED,
    (State.HANDSHAKE, Event.CLOSE): State.CLOSING,
    (State.AUTHENTICATED, Event.CLOSE): State.CLOSING,
    (State.CLOSING, Event.CLOSE): State.CLOSING,
    (State.HANDSHAKE, Event.CONNECTION_LOST): State.CLOSED,
    (State.AUTHENTICATED, Event.CONNECTION_LOST): State.CLOSED,
    (State.CLOSING, Event.CONNECTION_LOST): State.CLOSED,
    (State.CLOSED, Event.CONNECTION_LOST): State.CLOSED,
    (State.CLOSED, Event.CLOSE): State.CLOSED,
}


@dataclass(frozen=True)
class Timeouts:
    """Deadlines in seconds (TeamTalk's values by default; PROTOCOL.md section 1.2)."""

    login: float = 15.0
    idle_pc: float = 120.0
    idle_mobile: float = 300.0
    link_heartbeat_after: float = 5.0  # server links: send a heartbeat after this long without sending
    link_dead_after: float = 30.0  # server links: close after this long without receiving
    client_heartbeat_every: float = 30.0  # clients: send a heartbeat this often
    client_dead_after: float = 60.0  # clients: server silence that means a dead link
    max_unknown_commands: int = 8  # unknown or unauthorized commands tolerated before closing
    # Client sessions: a frame begun must be complete within this many seconds (slow-loris: a peer trickling
    # the bytes of one frame, each read too small to complete it, is closed instead of held forever).
    frame_read: float = 30.0


# Largest frame a client session accepts before login: every command allowed then (login, key exchange,
# heartbeat) is far smaller, so a stranger cannot make the server buffer a 1 MiB frame (or 600 of them).
PRELOGIN_MAX_FRAME_BYTES = 16 * 1024


DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True)
class HeartbeatLimit:
    """The heartbeat command's `input` rate policy. Heartbeats never reach the stages (the connection layer
    echoes them), so it is applied here: an excess heartbeat is not echoed (`drop`, and `reject`, which has
    nothing to answer with) or closes the connection (`close`)."""

    rate: float
    burst: float
    action: str
    max_bytes: int = 64  # the longest body echoed back (after login; before it, none is)

    @classmethod
    def of(cls, registry: Registry) -> HeartbeatLimit | None:
        """The limit the registry's heartbeat policy sets (None: no `rate`, or no heartbeat command)."""
        info = registry.id_table.get(HEARTBEAT_COMMAND_ID)
        policy = info.policy("input") if info is not None else {}
        if policy.get("rate") is None:
            return None
        rate = parse_rate(policy["rate"])
        return cls(
            rate,
            max(float(policy.get("burst", rate)), 1.0),
            choice(policy, "on_rate_exceeded", RATE_ACTIONS, "drop"),
            int(policy.get("max_bytes", HEARTBEAT_MAX_ECHO)),
        )


_HEARTBEAT_LIMITS: dict[int, tuple[Registry, HeartbeatLimit | None]] = {}


def heartbeat_limit(registry: Registry) -> HeartbeatLimit | None:
    """`HeartbeatLimit.of(registry)`, computed once per registry."""
    hit = _HEARTBEAT_LIMITS.get(id(registry))
    if hit is None or hit[0] is not registry:
        hit = _HEARTBEAT_LIMITS[id(registry)] = (registry, HeartbeatLimit.of(registry))
    return hit[1]


class Connection:
    """State of one connection: decoding, auth gate, heartbeat echo/initiation and deadlines."""

    __slots__ = (
        "_commands",
        "_decoder",
        "_hb_bucket",
        "_hb_limit",
        "_max_frame_bytes",
        "_out",
        "client_type",
        "close_reason",
        "is_open",
        "kind",
        "last_received",
        "last_sent",
        "opened_at",
        "partial_since",
        "peer",
        "registry",
        "state",
        "timeouts",
        "unknown_count",
        "user_id",
    )

    def __init__(
        self,
        registry: Registry,
        kind: Kind,
        now: float,
        *,
        peer: str = "?",
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        authenticated: bool | None = None,
    ) -> None:
        self.registry = registry
        self.kind = kind
        self.peer = peer
        self.timeouts = timeouts
        self._max_frame_bytes = max_frame_bytes
        self._out = bytearray()
        # Only client sessions pass an auth gate; server links are trusted peers on the cluster's listener.
        if authenticated is None:
            authenticated = kind is not Kind.CLIENT_SESSION
        self.state = State.AUTHENTICATED if authenticated else State.HANDSHAKE
        prelogin = not authenticated and kind is Kind.CLIENT_SESSION
        self._decoder = FrameDecoder(
            min(max_frame_bytes, PRELOGIN_MAX_FRAME_BYTES) if prelogin else max_frame_bytes
        )
        # A plain attribute, not a property: it is read for every frame. True in HANDSHAKE and AUTHENTICATED.
        self.is_open = True
        self._commands = registry.id_table
        self.opened_at = now
        self.last_received = now
        self.last_sent = now
        self.partial_since: float | None = None  # when the frame now partly received began (slow-read)
        self.user_id = 0
        self.client_type = 0
        self.unknown_count = 0
        self.close_reason: str | None = None
        self._hb_limit = heartbeat_limit(registry) if kind is Kind.CLIENT_SESSION else None
        self._hb_bucket: TokenBucket | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.peer} {self.kind.value} {self.state.value} user={self.user_id}>"

    # -- state table -----------------------------------------------------------------------------------------
    def _apply(self, event: Event) -> None:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise InvalidTransition(f"{event.value} not allowed in state {self.state.value}") from None
        self.is_open = self.state is State.HANDSHAKE or self.state is State.AUTHENTICATED

    @property
    def is_mobile(self) -> bool:
        """Mobile clients (the spec's ClientType bit MOBILE) get the longer idle timeout."""
        return bool(self.client_type & self.registry.bits("ClientType").get("MOBILE", 0))

    def authenticate(self, user_id: int, client_type: int) -> None:
        """Mark a successful login: binds the user and lifts the auth gate."""
        self._apply(Event.AUTHENTICATE)
        self._decoder.max_frame_bytes = self._max_frame_bytes
        self.user_id = user_id
        self.client_type = client_type

    def close(self, reason: str) -> None:
        """Decide to close (first reason wins); queued bytes still go out before the socket closes."""
        if self.close_reason is None:
            self.close_reason = reason
        self._apply(Event.CLOSE)

    def connection_lost(self) -> None:
        """The socket is gone."""
        if self.close_reason is None:
            self.close_reason = "connection lost"
        self._apply(Event.CONNECTION_LOST)

    # -- receiving -------------------------------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> Iterator[tuple[Frame, CommandInfo]]:
        """Feed received bytes; yield the frames a dispatcher should handle, each with its command.

        Decoding happens at once; the auth gate is applied as frames are taken, so a login handled before
        the next frame is taken lifts the gate for it. Heartbeats are answered here and not yielded. On a
        violation the connection moves to CLOSING with `close_reason` set and nothing after it is yielded.

        Only complete frames count as activity (`last_received`): bytes that never finish a frame do not
        hold a connection open, and a frame begun must end within `Timeouts.frame_read` (`partial_since`).
        """
        if not self.is_open:
            return iter(())
        decoder = self._decoder
        try:
            frames = decoder.feed(data)
        except FrameError as exc:
            self._violation(f"bad frame: {exc}")
            return iter(())
        if decoder.buffered:
            if frames or self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None
        if frames:
            self.last_received = now
        return self._admit(frames, now)

    def _admit(self, frames: list[Frame], now: float) -> Iterator[tuple[Frame, CommandInfo]]:
        get = self._commands.get
        for frame in frames:
            if not self.is_open:
                return
            cid = frame.command_id
            if cid == HEARTBEAT_COMMAND_ID:
                if self.kind is Kind.CLIENT_SESSION:
                    # The server echoes a client's heartbeat and never initiates one (PROTOCOL.md 1.2), within
                    # the heartbeat's input rate policy: a flood is not echoed, or closes the connection.
                    if self._hb_limit is not None and not self._heartbeat_allowed(now):
                        if self._hb_limit.action == "close":
                            self._violation(f"heartbeats above {self._hb_limit.rate:g}/s")
                            return
                        continue
                    # Before login the echo is a bare header (16 bytes, whatever the heartbeat carried), so
                    # sockets that send and never read pin no more than that; a logged-in client gets its
                    # body back up to the heartbeat's `max_bytes`.
                    body = (
                        frame.body if self.state is State.AUTHENTICATED and self._hb_echo_ok(frame) else b""
                    )
                    append_frame(self._out, frame.service_id, cid, frame.seq, body)
                    self.last_sent = now
                continue
            info = get(cid)
            if info is None:
                if self.note_unknown(f"unknown command 0x{cid:04x}"):
                    return
                continue
            if self.state is State.HANDSHAKE and info.policy("input").get("require_auth", True):
                # Unlike TeamTalk (defect: pre-login commands ran as user 0), refuse and close.
                self._violation(f"command {info.name} before authentication")
                return
            yield frame, info

    def _hb_echo_ok(self, frame: Frame) -> bool:
        limit = self._hb_limit
        return len(frame.body) <= (limit.max_bytes if limit is not None else HEARTBEAT_MAX_ECHO)

    def _heartbeat_allowed(self, now: float) -> bool:
        limit = self._hb_limit
        assert limit is not None
        bucket = self._hb_bucket
        if bucket is None:
            bucket = self._hb_bucket = TokenBucket(limit.rate, limit.burst, now)
        return bucket.take(now)

    def note_unknown(self, what: str) -> bool:
        """Count an unknown or unaccepted command; past the limit the connection closes (returns True)."""
        self.unknown_count += 1
        limit = self.timeouts.max_unknown_commands
        log.warning("%s from %s: ignored (%d of %d allowed)", what, self.peer, self.unknown_count, limit)
        if self.unknown_count > limit:
            self._violation(f"too many unknown commands ({self.unknown_count})")
            return True
        return False

    def _violation(self, reason: str) -> None:
        log.warning("closing %r: %s", self, reason)
        self.close(reason)

    # -- sending ---------------------------------------------------------------------------------------------
    def send_frame(
        self,
        service_id: int,
        command_id: int,
        seq: int,
        body: bytes | bytearray | memoryview,
        now: float,
        flag: int = 0,
    ) -> None:
        """Queue one frame; `data_to_send` returns everything queued as one buffer."""
        out = self._out
        out += _pack_header(HEADER_SIZE + len(body), PROTOCOL_VERSION, flag, service_id, command_id, seq, 0)
        out += body
        self.last_sent = now

    @property
    def pending_output(self) -> int:
        """Bytes queued and not yet taken by `data_to_send`."""
        return len(self._out)

    def data_to_send(self) -> bytes:
        """Take all queued output (empty if none)."""
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- timers ----------------------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest time at which `tick` could act (None once closed): the login and idle deadlines of a
        client session, the heartbeat and dead-peer times of a link. Only moves later as frames come and go,
        so a timer may fire at this time and call `tick`, which re-checks (runtime.timers)."""
        if not self.is_open:
            return None
        t = self.timeouts
        if self.kind is Kind.CLIENT_SESSION:
            idle = self.last_received + (t.idle_mobile if self.is_mobile else t.idle_pc)
            if self.partial_since is not None:
                idle = min(idle, self.partial_since + t.frame_read)
            if self.state is State.HANDSHAKE:
                return min(self.opened_at + t.login, idle)
            return idle
        if self.kind is Kind.SERVER_LINK:
            return min(self.last_received + t.link_dead_after, self.last_sent + t.link_heartbeat_after)
        return min(self.last_received + t.client_dead_after, self.last_sent + t.client_heartbeat_every)

    def tick(self, now: float) -> None:
        """Apply deadlines at `now`: login deadline, idle close, link heartbeats. Call about once a second."""
        if not self.is_open:
            return
        t = self.timeouts
        if self.kind is Kind.CLIENT_SESSION:
            if self.state is State.HANDSHAKE and now - self.opened_at >= t.login:
                self.close(f"login not completed within {t.login:g} s")
                return
            if self.partial_since is not None and now - self.partial_since >= t.frame_read:
                self.close(f"slow read: a frame not completed within {t.frame_read:g} s")
                return
            idle = t.idle_mobile if self.is_mobile else t.idle_pc
            if now - self.last_received >= idle:
                self.close(f"idle for {idle:g} s")
        elif self.kind is Kind.SERVER_LINK:
            if now - self.last_received >= t.link_dead_after:
                self.close(f"server link silent for {t.link_dead_after:g} s")
            elif now - self.last_sent >= t.link_heartbeat_after:
                self.send_frame(HEARTBEAT_SERVICE_ID, HEARTBEAT_COMMAND_ID, 0, b"", now)
        else:
            if now - self.last_received >= t.client_dead_after:
                self.close(f"server silent for {t.client_dead_after:g} s")
            elif now - self.last_sent >= t.client_heartbeat_every:
                self.send_frame(HEARTBEAT_SERVICE_ID, HEARTBEAT_COMMAND_ID, 0, b"", now)


# -- the internal-link protocol ------------------------------------------------------------------------------
_u16 = struct.Struct(">H")
_TARGETS = [struct.Struct(f">H{n}I") for n in range(9)]  # envelope heads of up to 8 targets (1:1 uses 1-2)

ReplyCallback = Callable[[Frame | None], None]
# What a callback gets for an answer that came in a FLAG_BATCH frame: an empty reply (None would mean the link
# was lost).
CONFIRMED = Frame(0, 0, 0, b"", flag=FLAG_RESPONSE)


def relay_head(targets: Sequence[int] | None) -> bytes:
    """The head of a relay envelope: u16 count (BROADCAST for all), then count x u32 user ids."""
    if targets is None:
        return _u16.pack(BROADCAST)
    n = len(targets)
    if n < len(_TARGETS):
        return _TARGETS[n].pack(n, *targets)
    if n >= BROADCAST:
        raise ValueError("too many relay targets")
    return struct.pack(f">H{n}I", n, *targets)


def pack_relay(targets: Sequence[int] | None, body: bytes) -> bytes:
    """A relay envelope: `relay_head(targets)`, then the message body."""
    return relay_head(targets) + body


def relay_targets(data: bytes | memoryview) -> tuple[tuple[int, ...] | None, int]:
    """(targets or None for broadcast, offset of the body) of a relay envelope, without copying the body."""
    if len(data) < 2:
        raise FrameError("truncated relay envelope")
    (n,) = _u16.unpack_from(data, 0)
    if n == BROADCAST:
        return None, 2
    end = 2 + 4 * n
    if len(data) < end:
        raise FrameError("truncated relay envelope")
    head = _TARGETS[n] if n < len(_TARGETS) else struct.Struct(f">H{n}I")
    return head.unpack_from(data, 0)[1:], end


def unpack_relay(data: bytes | memoryview) -> tuple[tuple[int, ...] | None, bytes]:
    """Split a relay envelope into (targets or None for broadcast, body)."""
    targets, start = relay_targets(data)
    return targets, bytes(data[start:])


def correlation(frame: Frame) -> int:
    """The 32-bit correlation id of a request or response frame."""
    return frame.seq | (frame.reserved << 16)


class LinkAuth:
    """What one process's links prove and check: the cluster secret; and how many peers were refused."""

    def __init__(self, secret: bytes, seal: str = "between_hosts") -> None:
        if seal not in SEAL_POLICIES:
            raise ValueError(f"link seal must be one of {', '.join(SEAL_POLICIES)}, not {seal!r}")
        self.secret = secret
        self.seal = seal  # seal records (AES-GCM): "always", "between_hosts" (peer not on loopback), "never"
        self.refused = 0
        self.on_refused: Callable[[], None] | None = None  # e.g. a metrics counter's inc

    def refuse(self) -> None:
        """Count one peer that failed the handshake."""
        self.refused += 1
        if self.on_refused is not None:
            self.on_refused()


class LinkConnection(Connection):
    """One end of a server-to-server link: the internal-link protocol (module docstring) over `Connection`.

    With `auth`, the connection starts in HANDSHAKE with its HELLO queued; nothing else is yielded or leaves
    (frames queue) until the peer has proven the secret, which moves it to AUTHENTICATED. `receive_data`
    answers responses itself (the request's callback runs) and yields requests and notices to dispatch."""

    __slots__ = (
        "_auth",
        "_auth_out",
        "_confirms",
        "_handshake",
        "_hs_in",
        "_next_corr",
        "_pending",
        "_sealer",
        "refused",
    )

    def __init__(
        self,
        registry: Registry,
        now: float,
        *,
        peer: str = "?",
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        max_frame_bytes: int = MAX_LINK_FRAME,
        auth: LinkAuth | None = None,
        dialer: bool = False,
    ) -> None:
        super().__init__(
            registry,
            Kind.SERVER_LINK,
            now,
            peer=peer,
            timeouts=timeouts,
            max_frame_bytes=max_frame_bytes,
            authenticated=auth is None,
        )
        self._auth = auth
        self._handshake = (
            LinkHandshake(auth.secret, dialer=dialer, seal=wants_seal(auth.seal, peer))
            if auth is not None
            else None
        )
        self._hs_in = bytearray()  # handshake bytes not yet a whole frame
        self._sealer: LinkSealer | None = None  # set when the handshake ends on a sealed link
        self._auth_out = bytearray()
        self._pending: dict[int, ReplyCallback] = {}
        self._next_corr = 1
        self._confirms: list[int] = []
        self.refused = False
        if self._handshake is not None:
            self._auth_frame(AUTH_HELLO, self._handshake.hello())

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    @property
    def handshaking(self) -> bool:
        """True until the peer has proven the cluster secret (never, without `auth`)."""
        return self._handshake is not None

    # -- the handshake ---------------------------------------------------------------------------------------
    def _auth_frame(self, command_id: int, body: bytes) -> None:
        self._auth_out += _pack_header(
            HEADER_SIZE + len(body), PROTOCOL_VERSION, FLAG_AUTH, 0, command_id, 0, 0
        )
        self._auth_out += body

    def _on_auth_frame(self, frame: Frame) -> None:
        handshake = self._handshake
        assert handshake is not None
        try:
            if not frame.flag & FLAG_AUTH:
                raise LinkAuthError(f"frame 0x{frame.command_id:04x} before the handshake")
            if frame.command_id == AUTH_HELLO:
                self._auth_frame(AUTH_PROOF, handshake.on_hello(bytes(frame.body)))
            elif frame.command_id == AUTH_PROOF:
                handshake.on_proof(bytes(frame.body))
            else:
                raise LinkAuthError(f"unknown handshake frame 0x{frame.command_id:04x}")
        except LinkAuthError as exc:
            self.refuse(str(exc))
            return
        if handshake.done:
            self._handshake = None
            if handshake.sealed:
                self._sealer = LinkSealer(handshake.link_key(), dialer=handshake.dialer)
            self._apply(Event.AUTHENTICATE)

    def refuse(self, reason: str) -> None:
        """The peer failed the handshake: count it, drop everything queued but handshake frames, close."""
        if not self.is_open:
            return
        log.warning("refused internal peer %s: %s", self.peer, reason)
        if self._auth is not None:
            self._auth.refuse()
        self.refused = True
        self._out.clear()  # only handshake frames already answered (a PROOF) may still leave
        self._confirms.clear()
        self.close(f"refused: {reason}")

    # -- receiving -------------------------------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> Iterator[tuple[Frame, CommandInfo]]:
        if not self.is_open:
            return iter(())
        self.last_received = now
        if self._handshake is not None:
            data = self._handshake_bytes(data)  # what follows the handshake (sealed, on a sealed link)
            if not data or not self.is_open:
                return iter(())
        try:
            if self._sealer is not None:
                data = self._sealer.open(data)
            frames = self._decoder.feed(data)
        except (FrameError, SealError) as exc:
            self._violation(f"bad frame: {exc}")
            return iter(())
        return self._admit(frames, now)

    def _handshake_bytes(self, data: bytes) -> bytes:
        """Take handshake frames one at a time (the bytes after the last one may be sealed); returns the
        bytes that follow the end of the handshake."""
        buf = self._hs_in
        buf += data
        pos = 0
        while self._handshake is not None and self.is_open and len(buf) - pos >= HEADER_SIZE:
            length = HEADER.unpack_from(buf, pos)[0]
            if not HEADER_SIZE <= length <= MAX_HANDSHAKE_FRAME:
                self.refuse(f"a handshake frame of {length} bytes")
                return b""
            if len(buf) - pos < length:
                break
            header = HEADER.unpack_from(buf, pos)
            self._on_auth_frame(tuple.__new__(Frame, (*header, bytes(buf[pos + HEADER_SIZE : pos + length]))))
            pos += length
        rest = bytes(buf[pos:])
        buf.clear()
        if self._handshake is not None:
            buf += rest
            return b""
        return rest

    def _admit(self, frames: list[Frame], now: float) -> Iterator[tuple[Frame, CommandInfo]]:
        get = self._commands.get
        pending = self._pending
        for frame in frames:
            if not self.is_open:
                return
            if self._handshake is not None:
                self._on_auth_frame(frame)
                continue
            flag = frame.flag
            if flag & FLAG_AUTH:
                self._violation("a handshake frame on an open link")
                return
            if flag & FLAG_RESPONSE:
                if flag & FLAG_BATCH:
                    self._confirmed(frame.body)
                    continue
                cb = pending.pop(frame.seq | (frame.reserved << 16), None)
                if cb is not None:
                    _answer(cb, frame)
                continue
            cid = frame.command_id
            if cid == HEARTBEAT_COMMAND_ID:
                continue
            info = get(cid)
            if info is None:
                log.warning("%s: unknown command 0x%04x on an internal link; answered empty", self.peer, cid)
                self.confirm(frame)
                continue
            yield frame, info

    def _confirmed(self, body: bytes | memoryview) -> None:
        """A FLAG_BATCH frame: the requests it names are answered (empty replies)."""
        n = len(body) // 4
        if n * 4 != len(body):
            log.warning("%s: a batch of answers of %d bytes (not whole ids); ignored", self.peer, len(body))
            return
        pending = self._pending
        for corr in struct.unpack(f">{n}I", body):
            cb = pending.pop(corr, None)
            if cb is not None:
                _answer(cb, CONFIRMED)

    def connection_lost(self) -> None:
        """The socket is gone: every outstanding request's callback gets None."""
        super().connection_lost()
        pending, self._pending = self._pending, {}
        for cb in pending.values():
            _answer(cb, None)

    # -- sending ---------------------------------------------------------------------------------------------
    def send_link(
        self,
        command_id: int,
        body: bytes | bytearray | memoryview,
        now: float,
        *,
        flag: int = 0,
        corr: int = 0,
        head: bytes = b"",
    ) -> bool:
        """Queue one frame whose body is `head + body` (e.g. a relay envelope's targets, then the message,
        without joining them first); False if the connection is closing (the frame is dropped)."""
        if not self.is_open:
            return False
        out = self._out
        size = HEADER_SIZE + len(head) + len(body)
        out += _pack_header(
            size, PROTOCOL_VERSION, flag, command_id >> 8, command_id, corr & 0xFFFF, corr >> 16
        )
        if head:
            out += head
        out += body
        self.last_sent = now
        return True

    def request(
        self,
        command_id: int,
        body: bytes | bytearray | memoryview,
        callback: ReplyCallback,
        now: float,
        *,
        flag: int = 0,
        head: bytes = b"",
    ) -> bool:
        """Queue a request (body `head + body`); `callback(reply frame)` on the answer (`CONFIRMED` for an
        empty one), `callback(None)` if the link is lost first. False (no callback) if it is closing."""
        if not self.is_open:
            return False
        corr = self._next_corr
        self._next_corr = corr + 1 if corr < 0xFFFFFFFF else 1
        self._pending[corr] = callback
        return self.send_link(command_id, body, now, flag=flag | FLAG_REQUEST, corr=corr, head=head)

    def reply(
        self, request: Frame, command_id: int, body: bytes | bytearray | memoryview, now: float
    ) -> bool:
        """Answer a `FLAG_REQUEST` frame (a no-op for frames that did not ask for a reply)."""
        if not request.flag & FLAG_REQUEST:
            return False
        return self.send_link(
            command_id, body, now, flag=FLAG_RESPONSE, corr=request.seq | (request.reserved << 16)
        )

    def confirm(self, request: Frame) -> bool:
        """Answer a `FLAG_REQUEST` frame with an empty reply, batched: every confirmation queued before the
        output is next taken leaves in one FLAG_BATCH frame. A no-op for frames that did not ask for a reply;
        False if the connection is closing."""
        if not request.flag & FLAG_REQUEST or not self.is_open:
            return False
        self._confirms.append(request.seq | (request.reserved << 16))
        return True

    @property
    def pending_output(self) -> int:
        return len(self._out) + len(self._auth_out) + len(self._confirms)

    def data_to_send(self) -> bytes:
        """Handshake frames first; nothing else before the peer is proven; confirmations as one frame."""
        auth = self._auth_out
        if self._handshake is not None:
            if not auth:
                return b""
            data = bytes(auth)
            auth.clear()
            return data
        confirms = self._confirms
        out = self._out
        if confirms:
            n = len(confirms)
            out += _pack_header(HEADER_SIZE + 4 * n, PROTOCOL_VERSION, FLAG_RESPONSE | FLAG_BATCH, 0, 0, 0, 0)
            out += struct.pack(f">{n}I", *confirms)
            confirms.clear()
        body = bytes(out) if self._sealer is None else self._sealer.seal(out)
        out.clear()
        if auth:
            data = bytes(auth) + body  # the last handshake frame goes out in clear, before any record
            auth.clear()
            return data
        return body

    # -- timers ----------------------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        deadline = super().next_deadline()
        if deadline is not None and self._handshake is not None:
            return min(deadline, self.opened_at + HANDSHAKE_TIMEOUT)
        return deadline

    def tick(self, now: float) -> None:
        """The handshake deadline, then heartbeats and the dead-peer rule."""
        if self._handshake is not None and self.is_open:
            if now - self.opened_at >= HANDSHAKE_TIMEOUT:
                self.refuse(f"no handshake within {HANDSHAKE_TIMEOUT:g} s")
            return
        super().tick(now)


def _answer(cb: ReplyCallback, frame: Frame | None) -> None:
    try:
        cb(frame)
    except Exception:  # a buggy callback must not kill the link
        log.exception("reply callback failed")

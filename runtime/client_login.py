"""Runtime client layer: logging a `ClientCore` in, with the password or a resumption ticket.

`SessionLogin` speaks the bundled protocol's login commands by name through the registry: a password login,
then a resumption ticket (`CID_EXT_RESUME_TICKET_REQ`), renewed at half its life while connected. On a
reconnect (the core's `on_resync`) it logs in with the ticket (`CID_EXT_TICKET_LOGIN_REQ`: no password hashing
at the server) and keeps the successor ticket; a refused ticket falls back to the password on the same
connection. A server that answers "busy" (its password verification is saturated) is asked again after a
jittered backoff, and the login service's queue is waited out by the core (`on_queue`). A protocol without the
ticket commands gets password logins only.

The password login never puts TeamTalk's MD5-hex credential (a password equivalent) on the wire when it can
avoid it: on a secure session (the core's handshake succeeded) it sends the password itself, sealed under that
connection's ephemeral keys (`CID_EXT_PASSWORD_LOGIN_REQ`); only without a secure session, or when given the
MD5 value instead of the password, does it send `CID_LOGIN_REQ_USERLOGIN` with the MD5 hex as TeamTalk
clients do, and `allow_md5=False` refuses even that (`LoginRefused` before anything is sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

from runtime.auth.passwords import normalize_wire, wire_password
from runtime.client import ClientCore
from runtime.errors import CallTimeout, ConnectionClosed, LoginServiceError
from runtime.registry import UnknownCommand

log = logging.getLogger("runtime.client.login")

# ResultType values that mean "not now" rather than "no": no msg/db/login/route server, or saturated (a msg
# server full, or biz's password verification pool full).
TRANSIENT = (
    "REFUSE_REASON_NO_MSG_SERVER",
    "REFUSE_REASON_MSG_SERVER_FULL",
    "REFUSE_REASON_NO_DB_SERVER",
    "REFUSE_REASON_NO_LOGIN_SERVER",
    "REFUSE_REASON_NO_ROUTE_SERVER",
)
Status = Callable[[str], None]


class LoginRefused(ConnectionError):
    """The server refused the login for good (bad credentials, locked, disabled)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class LoginBusy(ConnectionError):
    """The server is saturated; the same login may succeed later."""


class SessionLogin:
    """Logs one user in on a core and again after every reconnect; holds the user's resumption ticket."""

    def __init__(
        self,
        core: ClientCore,
        user_name: str,
        password: str,
        *,
        password_is_md5: bool = False,
        client_type: int = 1,
        online_status: int = 1,
        client_version: str = "ttgen",
        device_id: bytes | None = None,
        use_tickets: bool = True,
        allow_md5: bool = True,
        busy_timeout: float = 300.0,
        on_status: Status | None = None,
    ) -> None:
        self.core = core
        self.registry = core.registry
        self.user_name = user_name
        self._wire = normalize_wire(password) if password_is_md5 else wire_password(password)
        self._plain = None if password_is_md5 else password  # sent only sealed (CID_EXT_PASSWORD_LOGIN_REQ)
        self.allow_md5 = allow_md5
        self.client_type, self.online_status = client_type, online_status
        # Tickets are bound to this device id: by default a random one per SessionLogin, so a ticket copied
        # off this client is useless elsewhere (tickets live in memory only and die with the client anyway).
        self.client_version = client_version
        self.device_id = secrets.token_bytes(16) if device_id is None else device_id
        self.use_tickets = use_tickets and self._has("CID_EXT_TICKET_LOGIN_REQ")
        self.busy_timeout = busy_timeout
        self.on_status = on_status or (lambda _line: None)
        self.ticket = b""
        self.ticket_expires = 0
        self.user_info: Any = None
        self.last_method = ""  # "password" or "ticket": how the last login succeeded
        self.sent_md5 = False  # whether the last password login sent the MD5 hex (no secure session)
        self.ticket_refusals: list[int] = []  # TicketResult codes of refused tickets, oldest first
        self.refused: LoginRefused | None = None
        self._refresher: asyncio.Task[None] | None = None
        result = self.registry.by_name("CID_LOGIN_RES_USERLOGIN").message_class.DESCRIPTOR
        enum_type = result.fields_by_name["result_code"].enum_type
        values = enum_type.values_by_name if enum_type is not None else {}
        self._transient = frozenset(values[name].number for name in TRANSIENT if name in values)
        self.kicked = False
        core.on_resync = self._resync
        core.push_observers.append(self._observe)

    def _has(self, command: str) -> bool:
        try:
            self.registry.by_name(command)
        except UnknownCommand:
            return False
        return True

    def _new(self, command: str, **fields: Any) -> Any:
        return self.registry.by_name(command).message_class(**fields)

    @property
    def user_id(self) -> int:
        """The logged-in user's id (0 before the first login)."""
        return int(self.user_info.user_id) if self.user_info is not None else 0

    # -- the public flow -------------------------------------------------------------------------------------
    async def login(self) -> Any:
        """Connect (waiting in the login queue if the core uses the login service) and log in; retries while
        the server is busy, up to `busy_timeout`. Returns the user's UserInfo; LoginRefused if refused."""
        self.core.hold_reconnect = True  # our loop retries, not the core's
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.2
        try:
            while True:
                if not self.core.connected:
                    await self.core.connect()
                try:
                    await self._authenticate()
                    return self.user_info
                except (LoginBusy, ConnectionClosed, CallTimeout) as exc:
                    if time.monotonic() + delay > deadline:
                        raise
                    self.on_status(f"login did not go through ({exc}); trying again in {delay:.1f} s")
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, 10.0)
        except BaseException:
            # Refused for good, or given up: the session is over (pushes() ends, no reconnect).
            self.core.hold_reconnect = False
            self.core.reconnect = False
            await self.core.close()
            raise
        finally:
            self.core.hold_reconnect = False

    async def logout(self) -> None:
        """Log out (the server revokes the ticket) and forget the ticket."""
        self._stop_refresher()
        self.ticket, self.ticket_expires = b"", 0
        with contextlib.suppress(ConnectionClosed, CallTimeout):
            await self.core.call("CID_LOGIN_REQ_LOGINOUT", self._new("CID_LOGIN_REQ_LOGINOUT"))

    def close(self) -> None:
        """Stop renewing the ticket (the core is closed by its owner)."""
        self._stop_refresher()

    # -- one login on the current connection -----------------------------------------------------------------
    async def _authenticate(self) -> None:
        fresh = self.ticket and time.time() < self.ticket_expires - 1
        if self.use_tickets and fresh and await self._ticket_login():
            return
        await self._password_login()

    async def _ticket_login(self) -> bool:
        req = self._new(
            "CID_EXT_TICKET_LOGIN_REQ",
            ticket=self.ticket,
            online_status=self.online_status,
            client_type=self.client_type,
            client_version=self.client_version,
            device_id=self.device_id,
        )
        # Without an answer the ticket is kept: if it never reached biz it still works, and if biz consumed
        # it the next try is refused (TICKET_REVOKED) and falls back to the password.
        res: Any = await self.core.call("CID_EXT_TICKET_LOGIN_REQ", req)
        self.ticket = b""  # answered: used up, or refused
        if res.result_code != 0:
            self.ticket_refusals.append(int(res.result_code))
            self.on_status(f"resumption ticket refused ({res.result_string}); using the password")
            if not self.core.connected:  # the server could not take any login: try again (with the password)
                raise LoginBusy(res.result_string or "connection closed")
            return False
        self.user_info, self.last_method = res.user_info, "ticket"
        self._keep_ticket(res.ticket, res.expire_time)
        return True

    async def _password_login(self) -> None:
        if self._plain is not None and self.core.encrypted and self._has("CID_EXT_PASSWORD_LOGIN_REQ"):
            command, secret = "CID_EXT_PASSWORD_LOGIN_REQ", self._plain
        elif self.allow_md5:
            command, secret = "CID_LOGIN_REQ_USERLOGIN", self._wire
        else:
            why = "no secure session" if self._plain is not None else "only the MD5 value is known"
            self.refused = LoginRefused(f"login not sent: {why}, and MD5 logins are not allowed", -1)
            raise self.refused
        req = self._new(
            command,
            user_name=self.user_name,
            password=secret,
            online_status=self.online_status,
            client_type=self.client_type,
            client_version=self.client_version,
        )
        self.sent_md5 = command == "CID_LOGIN_REQ_USERLOGIN"
        res: Any = await self.core.call(command, req)
        if res.result_code in self._transient:
            raise LoginBusy(res.result_string or f"code {res.result_code}")
        if res.result_code != 0:
            self.refused = LoginRefused(
                f"login refused: {res.result_string or 'code ' + str(res.result_code)}", res.result_code
            )
            raise self.refused
        self.user_info, self.last_method = res.user_info, "password"
        if self.use_tickets:
            await self._request_ticket()

    async def _request_ticket(self) -> None:
        try:
            rsp: Any = await self.core.call(
                "CID_EXT_RESUME_TICKET_REQ", self._new("CID_EXT_RESUME_TICKET_REQ", device_id=self.device_id)
            )
        except (ConnectionClosed, CallTimeout) as exc:
            log.info("no resumption ticket: %s", exc)
            return
        if rsp.result_code == 0 and rsp.ticket:
            self._keep_ticket(rsp.ticket, rsp.expire_time)

    def _keep_ticket(self, ticket: bytes, expires: int) -> None:
        self.ticket, self.ticket_expires = bytes(ticket), int(expires)
        self._stop_refresher()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_later(), name="ticket-refresh")

    async def _refresh_later(self) -> None:
        """At half the ticket's remaining life, ask for a new one while still connected."""
        await asyncio.sleep(max(1.0, (self.ticket_expires - time.time()) / 2))
        if self.core.connected:
            self._refresher = None
            await self._request_ticket()

    def _stop_refresher(self) -> None:
        task, self._refresher = self._refresher, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _observe(self, info: Any, msg: Any) -> None:
        """A kicked session (a newer login of this user elsewhere) must not reconnect: the two devices would
        take turns kicking each other. Its ticket is revoked at the server anyway."""
        if info.name == "CID_LOGIN_KICK_USER":
            self.kicked = True
            self.core.reconnect = False
            self.ticket, self.ticket_expires = b"", 0
            self._stop_refresher()

    # -- reconnects ------------------------------------------------------------------------------------------
    async def _resync(self, core: ClientCore) -> None:
        """The core reconnected: log in again (ticket first). Busy: the server closes and the core's own
        reconnect loop tries again; refused for good: stop reconnecting."""
        try:
            await self._authenticate()
            self.on_status(f"reconnected ({self.last_method})")
        except LoginBusy as exc:
            self.on_status(f"server busy after reconnect ({exc}); trying again")
        except LoginRefused as exc:
            self.on_status(f"cannot log in again: {exc}")
            await core.close()
        except (ConnectionClosed, CallTimeout, LoginServiceError) as exc:
            self.on_status(f"login after reconnect failed: {exc}")

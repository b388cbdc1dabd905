"""Runtime fuzz layer: a blocking raw-frame connection for fuzz clients (any bytes out, decoded frames in).

Fuzzing needs to send what no well-behaved client would (garbage, lies about lengths, frames before login),
so this bypasses `runtime.client`. Waiting is on socket reads with a timeout, never on sleeps.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from runtime.errors import FrameError
from runtime.framing import Frame, FrameDecoder, encode_frame

HEARTBEAT = (7, 0x0701)  # answered by every runtime server at the connection layer
PROBE_SEQ_BASE = 0xF000


class PeerClosed(ConnectionError):
    """The server closed the connection."""


class NoAnswer(TimeoutError):
    """The server did not answer within the timeout."""


class RawConnection:
    """One TCP connection speaking raw frames."""

    def __init__(self, host: str, port: int, *, timeout: float = 2.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.decoder = FrameDecoder(1 << 24)
        self.inbox: list[Frame] = []
        self.closed = False
        self.sent = 0  # frames (or raw chunks) written
        self._probe = PROBE_SEQ_BASE

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are; a server that already closed raises PeerClosed."""
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.closed = True
            raise PeerClosed(f"send failed: {exc}") from None
        self.sent += 1

    def send_frame(self, service_id: int, command_id: int, seq: int, body: bytes, flag: int = 0) -> bytes:
        """Encode and send one frame; returns its bytes."""
        data = encode_frame(service_id, command_id, seq, body, flag=flag)
        self.send_raw(data)
        return data

    # -- receiving -------------------------------------------------------------------------------------------
    def _read(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NoAnswer("no answer within the timeout")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise NoAnswer("no answer within the timeout") from None
        except OSError as exc:
            self.closed = True
            raise PeerClosed(f"connection reset: {exc}") from None
        if not data:
            self.closed = True
            raise PeerClosed("server closed the connection")
        try:
            self.inbox.extend(self.decoder.feed(data))
        except FrameError as exc:
            raise AssertionError(f"server sent a malformed frame: {exc}") from None

    def wait_for(self, pred: Callable[[Frame], bool], timeout: float | None = None) -> Frame:
        """The first received frame matching `pred` (frames before it stay in `inbox`)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            for i, frame in enumerate(self.inbox):
                if pred(frame):
                    del self.inbox[i]
                    return frame
            self._read(deadline)

    def probe(self, timeout: float | None = None) -> list[Frame]:
        """Send a heartbeat and wait for its echo; returns the frames that arrived before the echo.

        A server handles a connection's frames in order, so the echo proves everything sent before it was
        taken (handlers that suspend may still answer later).
        """
        self._probe = PROBE_SEQ_BASE + (self._probe + 1 - PROBE_SEQ_BASE) % 0x0FFF
        seq = self._probe
        self.send_frame(*HEARTBEAT, seq, b"")
        self.wait_for(lambda f: f.command_id == HEARTBEAT[1] and f.seq == seq, timeout)
        before, self.inbox = self.inbox, []
        return before

    def wait_closed(self, timeout: float | None = None) -> bool:
        """True once the server closed the connection; False if it is still open after the timeout."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        try:
            while True:
                self._read(deadline)
        except PeerClosed:
            return True
        except NoAnswer:
            return False

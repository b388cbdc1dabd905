"""Runtime error layer: typed exceptions shared by framing, connections, stages, dispatch and the client."""

from __future__ import annotations


class RuntimeProtocolError(Exception):
    """Base of every error a peer can provoke; `close_connection` says whether the link must be dropped."""

    close_connection: bool = True

    def __init__(self, message: str, *, close_connection: bool | None = None) -> None:
        super().__init__(message)
        if close_connection is not None:
            self.close_connection = close_connection


class FrameError(RuntimeProtocolError):
    """The byte stream cannot be split into frames; a stream cannot resync, so the connection closes."""

    close_connection = True


class ZeroLengthFrame(FrameError):
    """The header declares a length of 0 (TeamTalk closes on this too)."""


class ShortFrame(FrameError):
    """The header declares a length shorter than the 16-byte header itself."""


class OversizedFrame(FrameError):
    """The header declares a length above the decoder's `max_frame_bytes`."""


class BodyError(RuntimeProtocolError):
    """A frame is well formed but its body is not a valid message for its command."""

    close_connection = True


class StageError(RuntimeProtocolError):
    """A lifecycle stage refused a message; `action` is `drop`, `reject` or `close`."""

    close_connection = False

    def __init__(self, message: str, *, action: str = "drop", rule: str = "") -> None:
        super().__init__(message, close_connection=action == "close")
        self.action = action
        self.rule = rule


class InputRejected(StageError):
    """The input stage refused a message (size, field constraint, rate limit or a reject rule)."""


class IntegrityError(StageError):
    """Authenticated decryption failed: the frame was tampered with or used the wrong key."""

    def __init__(self, message: str, *, action: str = "close", rule: str = "integrity") -> None:
        super().__init__(message, action=action, rule=rule)


class ReplayRejected(StageError):
    """A frame's nonce counter was seen before or fell out of the replay window."""

    def __init__(self, message: str, *, action: str = "drop", rule: str = "replay") -> None:
        super().__init__(message, action=action, rule=rule)


class InvalidTransition(RuntimeError):
    """A local caller asked the connection state machine for a transition its table does not allow (a bug)."""


class ConnectionClosed(ConnectionError):
    """The operation needs an open connection and the connection is closed."""


class CallTimeout(TimeoutError):
    """A request that expects a reply got none within its timeout."""


class LoginServiceError(ConnectionError):
    """The HTTP login service answered with a non-zero code or an unreadable reply."""

    def __init__(self, message: str, code: int = -1) -> None:
        super().__init__(message)
        self.code = code


class PlaintextRefused(ConnectionError):
    """The client requires an encrypted session (`encryption="require"`) and the server did not agree one."""

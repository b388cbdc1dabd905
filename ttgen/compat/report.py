"""CLI compat layer: the result of a cross-version run (one `Exchange` per command, direction and leg)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

Verdict = Literal["ok", "lossy", "broken", "ignored", "skipped"]
VERDICT_RANK: dict[str, int] = {"ok": 0, "ignored": 0, "skipped": 0, "lossy": 1, "broken": 2}
OLD_CLIENT = "old-client/new-server"
NEW_CLIENT = "new-client/old-server"


@dataclass(frozen=True)
class Exchange:
    """One probe over real frames.

    `leg` is `request` (the client's sample, echoed back by the server: server view + round trip compared) or
    `push` (a server-initiated command decoded by the client). `detail` lists what did not survive (or why the
    exchange failed); `carried` lists fields the receiver does not declare, kept as unknown fields.
    """

    command: str
    command_id: int
    pairing: str
    leg: str
    verdict: Verdict
    detail: tuple[str, ...] = ()
    carried: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return VERDICT_RANK[self.verdict] > 0

    def format(self) -> str:
        """`old-client/new-server  request  CID_X (0x0201): lossy: server saw count: sent ..., received 2`."""
        head = f"{self.pairing:<22} {self.leg:<7} {self.command} (0x{self.command_id:04x}): {self.verdict}"
        notes = list(self.detail)
        if self.carried:
            notes.append("carried as unknown fields: " + ", ".join(self.carried))
        return head + (": " + "; ".join(notes) if notes else "")


@dataclass
class CompatReport:
    """Every exchange of a run, with the two versions it compared."""

    old_version: str
    new_version: str
    exchanges: list[Exchange] = field(default_factory=list)

    def failures(self, threshold: str = "lossy") -> list[Exchange]:
        """Exchanges whose verdict is at least as bad as `threshold` (`lossy` or `broken`)."""
        limit = VERDICT_RANK[threshold]
        return [e for e in self.exchanges if VERDICT_RANK[e.verdict] >= limit > 0]

    def find(self, command: str, pairing: str, leg: str | None = None) -> Exchange:
        """The exchange of `command` in `pairing` (and `leg`); KeyError if it was not run."""
        for e in self.exchanges:
            if e.command == command and e.pairing == pairing and (leg is None or e.leg == leg):
                return e
        raise KeyError(f"no exchange {command} {pairing} {leg or ''}".strip())

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for e in self.exchanges:
            counts[e.verdict] = counts.get(e.verdict, 0) + 1
        parts = [f"{counts[v]} {v}" for v in ("broken", "lossy", "ok", "ignored", "skipped") if counts.get(v)]
        head = f"{self.old_version} -> {self.new_version}: {len(self.exchanges)} exchanges"
        return head + (": " + ", ".join(parts) if parts else "")

    def render_text(self) -> str:
        lines = [e.format() for e in self.exchanges]
        lines.append(self.summary())
        return "\n".join(lines) + "\n"

    def render_json(self, *, failed: bool = False) -> str:
        doc = {
            "old_version": self.old_version,
            "new_version": self.new_version,
            "exchanges": [asdict(e) for e in self.exchanges],
            "failed": failed,
        }
        return json.dumps(doc, indent=2) + "\n"

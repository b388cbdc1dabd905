"""Runtime fuzz layer: reproducers: a failure's minimal steps saved as JSON, and their replay.

A reproducer holds the steps of the shrunk failing example: for the live suites the connection (logged in or
not), the frames as hex and the checks; for the sans-IO suites the byte chunks fed to the decoder; for the
frame-limit and authentication properties their parameters; for the stateful models the rules with the
arguments drawn (who logs in, sends, creates a group, changes its members...), which replay on a fresh model
bound to the target. `replay` runs the steps again and raises AssertionError while the bug is still there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.framing import FrameDecoder
from runtime.fuzz import framing, live
from runtime.fuzz.stack import FuzzStack
from runtime.fuzz.targets import Target
from runtime.fuzz.wire import PeerClosed, RawConnection


@dataclass
class Reproducer:
    """One failure found by fuzzing, minimal after shrinking."""

    spec: str
    suite: str
    case: str
    failure: str
    steps: list[dict[str, Any]]
    example: str = ""
    command: str = ""
    plant: str | None = None
    seed: int | None = None
    id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.id:
            blob = json.dumps([self.case, self.steps], sort_keys=True).encode()
            self.id = hashlib.sha256(blob).hexdigest()[:12]

    def frames_hex(self) -> list[str]:
        """The bytes sent, in order (frames or raw chunks)."""
        out: list[str] = []
        for step in self.steps:
            if "hex" in step:
                out.append(step["hex"])
            out.extend(step.get("chunks", []))
        return out

    def describe(self) -> str:
        """Human-readable: the failure, then each step."""
        lines = [f"{self.case}: {self.failure}"]
        for step in self.steps:
            extra = {k: v for k, v in step.items() if k not in ("op", "hex", "chunks")}
            text = f"  {step['op']}" + (f" {extra}" if extra else "")
            if "hex" in step:
                text += f"\n    bytes: {step['hex']}"
            for chunk in step.get("chunks", []):
                text += f"\n    chunk: {chunk}"
            lines.append(text)
        return "\n".join(lines)

    def save(self, folder: Path) -> Path:
        """Write `<folder>/<id>.json` (folder created); returns the path."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.id}.json"
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path) -> Reproducer:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def load_all(folder: Path) -> list[Reproducer]:
    """Every reproducer saved under `folder` (recursively), sorted by path."""
    return [Reproducer.load(p) for p in sorted(folder.rglob("*.json"))] if folder.is_dir() else []


def replay(
    rep: Reproducer, stack: FuzzStack, target: Target | None, decoder: type[FrameDecoder] = FrameDecoder
) -> None:
    """Run the steps again; AssertionError if an invariant still fails."""
    if any(step["op"] == "rule" for step in rep.steps):
        if target is None:
            raise ValueError("a stateful reproducer needs a live target")
        from runtime.fuzz.stateful import machine_for, replay_rules

        target.prepare()
        replay_rules(machine_for(stack, target), rep.steps)
        return
    conn: RawConnection | None = None
    try:
        for step in rep.steps:
            op = step["op"]
            if op == "decode":
                chunks = [bytes.fromhex(c) for c in step["chunks"]]
                if step.get("expect") == "roundtrip":
                    _replay_roundtrip(chunks, decoder)
                else:
                    framing.check_decoder(chunks, decoder)
            elif op == "connection":
                framing.check_connection(stack.registry, [bytes.fromhex(c) for c in step["chunks"]], decoder)
            elif op == "roundtrip":
                cls = stack.messages[step["message"]].cls
                data = bytes.fromhex(step["hex"])
                assert cls.FromString(data).SerializeToString(deterministic=True) == data, (
                    "re-serialized bytes differ"
                )
            elif op == "limit":
                framing.check_limit(int(step["offset"]), int(step["chunk"]), decoder, int(step["limit"]))
            elif op in ("sent", "frame"):
                continue  # informative: frames a model sent while running a rule
            elif target is None:
                raise ValueError(f"step {op!r} needs a live target")
            elif op == "frame_limit":
                live.check_frame_limit(target, int(step["offset"]))
            elif op == "auth":
                live.check_auth(target, step["user"], step["kind"], step["password"])
            elif op == "connect":
                if conn is not None:
                    conn.close()
                target.prepare()
                conn = target.connect(login=bool(step.get("login")))
            elif op == "send":
                assert conn is not None
                _replay_send(stack, target, conn, step)
            elif op == "raw":
                assert conn is not None
                try:
                    conn.send_raw(bytes.fromhex(step["hex"]))
                except PeerClosed:
                    pass
            elif op == "check_server":
                if conn is not None:
                    conn.close()
                    conn = None
                live.check_server(target)
    finally:
        if conn is not None:
            conn.close()


def _replay_send(stack: FuzzStack, target: Target, conn: RawConnection, step: dict[str, Any]) -> None:
    # The outcome recorded when the reproducer was found is what the spec prescribed for these bytes.
    conn.send_raw(bytes.fromhex(step["hex"]))
    live.check_outcome(target, conn, stack.command(step["command"]), str(step.get("expect", "accept")))


def _replay_roundtrip(chunks: list[bytes], decoder: type[FrameDecoder]) -> None:
    wire = b"".join(chunks)
    expected = []
    dec = FrameDecoder(1 << 20)
    for frame in dec.feed(wire):
        expected.append((frame.service_id, frame.command_id, frame.seq, bytes(frame.body)))
    cuts, pos = [], 0
    for chunk in chunks[:-1]:
        pos += len(chunk)
        cuts.append(pos)
    framing.check_roundtrip(expected, cuts, decoder)

"""CLI layer: wires a generated stack, a fuzz target (in-process cluster, validating server, running server)
and the planted test-only bugs into `runtime.fuzz.engine` for `ttgen fuzz`."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import click

from runtime.framing import FrameDecoder
from runtime.fuzz import plant as plants
from runtime.fuzz.atheris_engine import available, chunks_of
from runtime.fuzz.cluster import ClusterTarget, cluster_supports, md5hex
from runtime.fuzz.reproducer import Reproducer
from runtime.fuzz.stack import FuzzStack
from runtime.fuzz.targets import RemoteTarget, Target, ValidatingTarget
from runtime.registry import CommandInfo
from ttgen.stack import load_stack

DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """`60s`, `2m`, `500ms`, `90` (seconds) -> seconds."""
    match = DURATION.match(text.strip())
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration such as 60s, 2m or 500ms", param_hint="--time")
    return float(match.group(1)) * UNITS[match.group(2)]


def fuzz_stack(name: str, stack_dir: Path | None = None) -> FuzzStack:
    """The generated stack of spec `name` (generated into `stack_dir`), with its strategies module."""
    stack = load_stack(name, stack_dir)
    try:
        strategies = importlib.import_module(f"{stack.module}.strategies")
    except ModuleNotFoundError:
        raise click.ClickException(
            f"{stack.module} has no strategies module; regenerate it: ttgen generate spec/{name}"
        ) from None
    registry = importlib.import_module(f"{stack.module}.registry")
    return FuzzStack(stack.registry, stack.servers, strategies, dict(getattr(registry, "FRAME", {}) or {}))


@dataclass(frozen=True)
class Plan:
    """What to fuzz against: the live target (None: sans-IO suites only) and the decoder under test."""

    target: Target | None
    decoder: type[FrameDecoder]
    description: str


class TeamTalkRemote(RemoteTarget):
    """A running TeamTalk cluster: fuzz connections log in with the given credentials."""

    def __init__(
        self, stack: FuzzStack, host: str, port: int, user: str | None, password: str | None
    ) -> None:
        super().__init__(stack, host, port, user=user or "fuzz", password=password or "fuzz-secret")

    def login_message(self):  # type: ignore[no-untyped-def]
        info = self.stack.command("CID_LOGIN_REQ_USERLOGIN")
        msg = cast(Any, info.message_class)(
            user_name=self.user, password=md5hex(self.password or ""), online_status=1, client_type=1
        )
        return info, msg

    def check_login_reply(self, reply) -> None:  # type: ignore[no-untyped-def]
        assert getattr(reply, "result_code", 0) == 0, f"login refused: {reply}"

    def login_request(self, user: str, password: str):  # type: ignore[no-untyped-def]
        info = self.stack.command("CID_LOGIN_REQ_USERLOGIN")
        wire = md5hex(password) if password else ""
        login: Any = info.message_class
        return info, login(user_name=user, password=wire, online_status=1, client_type=1)


def plan(
    stack: FuzzStack,
    *,
    target: str | None,
    server: str,
    plant: str | None,
    live: bool,
    user: str | None,
    password: str | None,
) -> Plan:
    """Choose the target for the run. `plant` (test-only) puts a known bug into the in-process server."""
    decoder = plants.decoder_for(plant)
    if not live:
        return Plan(None, decoder, "sans-IO suites only")
    if target:
        host, _, port = target.rpartition(":")
        if not port.isdigit():
            raise click.BadParameter(f"{target!r} is not HOST:PORT", param_hint="--target")
        remote: Target = (
            TeamTalkRemote(stack, host or "127.0.0.1", int(port), user, password)
            if cluster_supports(stack)
            else RemoteTarget(stack, host or "127.0.0.1", int(port), user=user, password=password)
        )
        return Plan(remote, decoder, f"running server {target}")
    kind = server if server != "auto" else ("cluster" if cluster_supports(stack) else "validating")
    if kind == "cluster":
        planted = plants.plant_command(stack, "msg").name if plant in ("handler", "raise") else None
        cluster_plant = plant if plant in plants.CLUSTER_PLANTS else None
        desc = "in-process cluster" + (
            f" (planted bug: {plant_text(plant, planted)})" if cluster_plant else ""
        )
        return Plan(ClusterTarget(stack, plant_command=planted, plant=cluster_plant), decoder, desc)
    if plant in ("auth", "authz"):
        raise click.UsageError(
            f"--plant {plant} plants the bug in the cluster's biz service: use --server cluster"
        )
    server_decoder = decoder if plant in ("framing", "frame_max") else None
    validating = ValidatingTarget(stack, decoder=server_decoder)
    desc = "in-process validating server"
    if plant in ("handler", "raise"):
        info = plants.plant_command(stack)
        server_obj = validating.server
        kind_ = plant

        def planted_hook(ctx: object, cmd: CommandInfo, msg: object) -> None:
            if cmd.name == info.name and plants.trips(msg):  # type: ignore[arg-type]
                if kind_ == "raise":
                    raise plants.PlantedError(f"planted bug: {cmd.name} with a uint32 field at its maximum")
                plants.crash(server_obj.links)

        validating.service.plant = planted_hook
        desc += f" (planted bug: {plant_text(plant, info.name)})"
    elif plant:
        desc += f" (planted bug: {plant_text(plant, None)})"
    return Plan(validating, decoder, desc)


def plant_text(plant: str | None, command: str | None) -> str:
    """What a planted bug is, for the run's header line."""
    return {
        "handler": f"handler of {command} crashes the server",
        "raise": f"handler of {command} raises",
        "framing": "frame decoder off by one at the header",
        "frame_max": "frame length limit off by one",
        "auth": "login skips the password check for some user names",
        "authz": "group member changes skip the authorization check",
    }.get(plant or "", str(plant))


def run_atheris(spec_name: str, budget: float, seed: int, plant: str | None) -> list[Reproducer]:
    """Coverage-guided fuzzing of the decoder and connection in a child process; each crash -> reproducer."""
    if not available():
        raise click.ClickException("--engine atheris needs atheris: pip install 'ttgen[fuzz]'")
    with tempfile.TemporaryDirectory(prefix="ttgen-atheris-") as tmp:
        command = [
            sys.executable,
            "-m",
            "runtime.fuzz.atheris_engine",
            "--time",
            str(max(1, int(budget))),
            "--seed",
            str(seed),
            "--artifacts",
            tmp,
        ]
        if plant == "framing":
            command += ["--plant", "framing"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        for line in [ln for ln in result.stderr.splitlines() if ln.startswith(("#", "stat::"))][-6:]:
            click.echo(f"  atheris: {line}")
        found = []
        for crash in sorted(Path(tmp).glob("crash-*")):
            chunks = chunks_of(crash.read_bytes())
            found.append(
                Reproducer(
                    spec=spec_name,
                    suite="frames",
                    case="atheris/decoder",
                    failure=_failure_line(result.stdout + result.stderr),
                    plant=plant,
                    seed=seed,
                    steps=[{"op": "decode", "chunks": [c.hex() for c in chunks], "expect": "consistent"}],
                )
            )
        return found


def _failure_line(stderr: str) -> str:
    for line in stderr.splitlines():
        if "Error" in line and ":" in line:
            return line.strip()
    return "atheris reported a crash"

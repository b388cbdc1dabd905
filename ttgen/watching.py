"""CLI layer: `ttgen watch`: on every save of a spec file, check, regenerate what changed, diff against a
base revision, re-run the affected generated tests and restart the served app.

Saves are noticed by polling the spec files' modification times and sizes (no dependency, works on every
file system, including network mounts and editors that replace files); `interval` is the polling period.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from codegen.diagnostics import SpecError
from codegen.diff import Finding
from codegen.diff.render import render_text
from codegen.gitspec import GitSpecError
from codegen.model import Spec

Echo = Callable[[str], None]
SPEC_SUFFIXES = (".yaml", ".yml")


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime in ns, size) of every spec file under `root` (a folder, or the manifest file itself)."""
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.suffix in SPEC_SUFFIXES]
    out = {}
    for path in sorted(files):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # removed between listing and stat: the next poll sees it gone
        out[str(path)] = (st.st_mtime_ns, st.st_size)
    return out


def affected_names(findings: list[Finding], spec: Spec) -> list[str]:
    """The messages (qualified) and commands the findings are about, with the commands that carry a changed
    message: the generated tests whose ids name one of them are the ones a change can affect."""
    messages = spec.messages()
    commands = spec.commands()
    names: set[str] = set()
    for finding in findings:
        subject = finding.subject
        for part in re.split(r"[\s:/(),]+", subject):
            if part in commands:
                names.add(part)
            qual = part
            while qual and qual not in messages:
                qual = qual.rpartition(".")[0]  # a field or nested element: its message
            if qual:
                names.add(qual)
    for command in commands.values():
        if command.message in names:
            names.add(command.name)
    return sorted(names)


def keyword(name: str) -> str:
    """A pytest -k term for a test id part: a message's short name (dots cannot appear in -k terms)."""
    return name.rpartition(".")[2]


@dataclass
class Served:
    """The app `ttgen watch --serve` keeps running: a Python script, or a module when it sits in a package."""

    path: Path
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """`python -m pkg.mod` for a file in a package under the current directory (so its imports of the
        package work), else `python path`."""
        path = self.path.resolve()
        if (path.parent / "__init__.py").is_file():
            try:
                parts = path.with_suffix("").relative_to(Path.cwd().resolve()).parts
            except ValueError:
                parts = ()
            if parts:
                return [sys.executable, "-m", ".".join(parts), *self.args]
        return [sys.executable, str(path), *self.args]

    def restart(self) -> int:
        """Stop the running copy (if any) and start a new one; returns its pid."""
        self.stop()
        self.process = subprocess.Popen(self.command())  # inherits stdout: its output shows in the watch's
        return self.process.pid

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)  # the app's own shutdown path (KeyboardInterrupt)
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)


@dataclass
class Watcher:
    """One watched spec and what to do on each change."""

    spec_path: Path
    base: str | None = "HEAD"
    run_tests: bool = False
    serve: Served | None = None
    echo: Echo = print
    last: dict[str, tuple[int, int]] = field(default_factory=dict)
    cycles: int = 0

    def say(self, text: str) -> None:
        self.echo(f"[watch] {text}")

    def changed(self) -> bool:
        now = snapshot(self.spec_path)
        if now == self.last:
            return False
        self.last = now
        return True

    def cycle(self) -> bool:
        """Check, regenerate, diff, test, restart. False when the spec has errors (nothing else is done)."""
        from ttgen.commands import _common
        from ttgen.commands.generate import generate_stack, resolve_targets

        self.cycles += 1
        try:
            spec, warnings = _common.load_checked(self.spec_path)
        except SpecError as exc:
            _common.print_diagnostics(exc.diagnostics, err=False)
            self.say(f"check: {len(exc.diagnostics)} problem(s); fix and save again (the app keeps running)")
            return False
        for warning in warnings:
            self.echo(warning.format())
        targets = resolve_targets(spec, None, None)
        reports = generate_stack(spec, targets, check=False)
        written = sorted({path for report in reports for path in report.written + report.removed})
        if written:
            self.say(
                f"generated {targets.stack}: {len(written)} file(s) changed: {', '.join(written[:8])}"
                + (" ..." if len(written) > 8 else "")
            )
        else:
            self.say(f"generated {targets.stack}: up to date")
        findings = self.diff(spec)
        if self.run_tests and (written or self.cycles == 1):
            self.test(targets.stack, findings, spec)
        if self.serve is not None and (written or self.serve.process is None):
            pid = self.serve.restart()
            self.say(f"serving {self.serve.path} (pid {pid})")
        return True

    def diff(self, spec: Spec) -> list[Finding] | None:
        """Findings against the base revision (None: no base, or it cannot be read)."""
        if not self.base:
            return None
        from ttgen.commands.diff import diff_sources

        rel = os.path.relpath(Path(spec.root if self.spec_path.is_dir() else self.spec_path))
        old = f"{self.base}:./{rel}"
        try:
            findings = diff_sources(old, str(self.spec_path))
        except (GitSpecError, SpecError) as exc:
            self.say(f"diff against {self.base}: skipped ({str(exc).splitlines()[0]})")
            return None
        self.say(f"diff against {self.base}:")
        for line in render_text(findings).rstrip("\n").splitlines():
            self.echo(f"  {line}")
        return findings

    def test(self, stack_dir: Path, findings: list[Finding] | None, spec: Spec) -> bool:
        """Run the stack's generated tests that a change can affect (all of them without a diff)."""
        tests = stack_dir / "tests"
        if not tests.is_dir():
            self.say(f"tests: {tests} does not exist")
            return False
        names = affected_names(findings, spec) if findings else []
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib"]
        command += ["--rootdir", str(stack_dir.parent), str(tests)]
        what = "all generated tests"
        if findings is not None and not findings:
            self.say("tests: the spec is unchanged since the base; no generated test is affected")
            return True
        if names:
            command += ["-k", " or ".join(sorted({keyword(n) for n in names}))]
            what = f"generated tests of {', '.join(names)}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(stack_dir.parent.parent), env.get("PYTHONPATH")) if p
        )
        self.say(f"tests: running {what}")
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        last = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        if result.returncode in (0, 5):  # 5: nothing selected
            self.say(f"tests passed: {last}")
            return True
        self.echo(result.stdout[-4000:])
        self.say(f"tests FAILED: {last}")
        return False

    def run(self, interval: float, max_cycles: int = 0) -> None:
        """Poll until interrupted (or `max_cycles` cycles ran); a cycle whenever a spec file changed."""
        try:
            while True:
                if self.changed():
                    self.cycle()
                    self.say(f"watching {self.spec_path} (Ctrl-C to stop)")
                    if max_cycles and self.cycles >= max_cycles:
                        return
                time.sleep(interval)  # the polling period
        finally:
            if self.serve is not None:
                self.serve.stop()

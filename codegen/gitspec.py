"""Codegen git layer: load a spec from a working-tree path or a git revision (`REV:path`) via `git archive`.

A side of `ttgen diff` / `ttgen compat` is either a path that exists (a spec folder or manifest) or
`REV:path`, where `REV` is anything `git rev-parse` accepts (`main`, `HEAD~1`, a tag, a sha) and `path` is
relative to the repository root, like git's own `REV:path`; a path starting with `./` or `../` is relative to
the current directory instead. The revision's tree is extracted into a temporary directory (so manifests may
include files outside the spec folder) and every location is mapped back to the file's working-tree path.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from codegen.api import check_spec
from codegen.diagnostics import Diagnostic, SpecError
from codegen.model import Loc, Spec


class GitSpecError(Exception):
    """A side could not be resolved: not a path, not a repository, unknown revision or path."""


@dataclass(frozen=True)
class SpecSource:
    """One side of a comparison as the user wrote it: a plain path, or a revision and a repository path."""

    text: str
    rev: str | None
    path: str

    @property
    def is_git(self) -> bool:
        return self.rev is not None


def parse_source(text: str, *, cwd: str | None = None) -> SpecSource:
    """Classify `text`: an existing path wins; otherwise `REV:path` splits at the first colon."""
    base = cwd or os.getcwd()
    if os.path.exists(os.path.join(base, text)):
        return SpecSource(text, None, text)
    rev, sep, path = text.partition(":")
    if not sep or not rev:
        raise GitSpecError(f"{text}: no such spec path (for a git revision write REV:path, e.g. HEAD~1:spec)")
    return SpecSource(text, rev, path or ".")


def _git(args: list[str], cwd: str) -> bytes:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError:
        raise GitSpecError("git is not installed (needed for REV:path sides)") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitSpecError(f"git {' '.join(args)}: {err[-1] if err else 'failed'}")
    return proc.stdout


@dataclass(frozen=True)
class Materialized:
    """A spec side on disk: `path` to load, and `relabel` to map locations back to working-tree paths."""

    source: SpecSource
    path: str
    relabel: Callable[[Loc], Loc]


def _identity(loc: Loc) -> Loc:
    return loc


@contextmanager
def materialize(text: str, *, cwd: str | None = None) -> Iterator[Materialized]:
    """Make one side available on disk for as long as the context lasts (a temp dir for git revisions)."""
    base = cwd or os.getcwd()
    source = parse_source(text, cwd=base)
    if source.rev is None:
        yield Materialized(source, os.path.join(base, source.path), _identity)
        return
    toplevel = _git(["rev-parse", "--show-toplevel"], base).decode().strip()
    verify = ["rev-parse", "--verify", "--end-of-options", f"{source.rev}^{{commit}}"]
    commit = _git(verify, base).decode().strip()
    if source.path.startswith(("./", "../")) or source.path in (".", ".."):
        repo_path = os.path.relpath(os.path.normpath(os.path.join(base, source.path)), toplevel)
    else:
        repo_path = source.path.strip("/") or "."
    if repo_path.startswith(".."):
        raise GitSpecError(f"{text}: path is outside the repository")
    if repo_path != ".":
        listed = _git(["ls-tree", "--name-only", commit, "--", repo_path.rstrip("/")], toplevel)
        if not listed.strip():
            raise GitSpecError(f"{text}: path '{repo_path}' does not exist in {source.rev}")
    archive = _git(["archive", "--format=tar", commit], toplevel)
    with tempfile.TemporaryDirectory(prefix="ttgen-rev-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(tmp)  # git archive output of the user's own repository
        real_tmp = os.path.realpath(tmp)

        def relabel(loc: Loc) -> Loc:
            full = os.path.abspath(loc.file)
            for root in (real_tmp, tmp):
                if full.startswith(root + os.sep):
                    rel = os.path.relpath(full, root)
                    shown = os.path.relpath(os.path.join(toplevel, rel), base)
                    if shown.startswith(".."):
                        shown = os.path.join(toplevel, rel)
                    return replace(loc, file=shown)
            return loc

        yield Materialized(source, os.path.join(tmp, repo_path), relabel)


def relabel_diagnostics(diags: list[Diagnostic], relabel: Callable[[Loc], Loc]) -> list[Diagnostic]:
    """Diagnostics with their locations mapped back (so errors in a revision name working-tree paths)."""
    return [replace(d, loc=relabel(d.loc)) for d in diags]


def load_side(side: Materialized) -> Spec:
    """Load and validate a materialized side; a `SpecError` carries relabelled diagnostics."""
    try:
        spec, _warnings = check_spec(side.path)
    except SpecError as exc:
        raise SpecError(relabel_diagnostics(exc.diagnostics, side.relabel)) from None
    return spec

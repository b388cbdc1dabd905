"""Fixtures for the bundled TeamTalk spec's contract tests: the reference TSV facts and the spec folder."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SPEC_DIR = REPO / "spec" / "teamtalk"
# The reference facts are kept in the repository (tests/data/teamtalk/*.tsv), so a clone alone passes.
FACTS_DIR = REPO / "tests" / "data" / "teamtalk"
TSV_FILES = ("fields.tsv", "enums.tsv", "commands.tsv")


@dataclass(frozen=True)
class TeamTalkFacts:
    """TeamTalk's wire contract as the reference TSVs state it."""

    fields: list[dict[str, str]]
    enums: list[dict[str, str]]
    commands: list[dict[str, str]]


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [dict(row) for row in csv.DictReader(fh, delimiter="\t")]


@pytest.fixture(scope="session")
def teamtalk_facts() -> TeamTalkFacts:
    """The TSV facts; a missing file fails the test (never skips): the contract must always be checked."""
    missing = [name for name in TSV_FILES if not (FACTS_DIR / name).is_file()]
    if missing:
        pytest.fail(
            f"TeamTalk reference facts not found: {', '.join(missing)} in {FACTS_DIR}",
            pytrace=False,
        )
    facts = TeamTalkFacts(*(_read_tsv(FACTS_DIR / name) for name in TSV_FILES))
    assert facts.fields and facts.enums and facts.commands, f"empty reference TSV in {FACTS_DIR}"
    return facts


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    assert (SPEC_DIR / "ttgen.yaml").is_file(), f"bundled spec missing: {SPEC_DIR}"
    return SPEC_DIR

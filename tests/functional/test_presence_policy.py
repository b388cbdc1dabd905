"""Functional tests: a presence policy declared inline in the manifest is generated into the registry, and the
runtime's presence codec builds and reads that stack's own pushes from it (proto3, no owner field)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from codegen.api import check_spec
from codegen.diagnostics import SpecError
from runtime.services.presence import PresenceCodec, PresencePolicy

MANIFEST = """
spec: func_presence
version: 1.0.0
syntax: proto3
modules: [buddy.yaml]
presence:
  audience: subscribers
  clients: all
  coalesce: 250ms
  notify: CID_SEEN
  batch: CID_SEEN_MANY
  batch_from: 3
  online: PRESENT
  offline: ABSENT
"""

MODULE = """
module: Func.Presence
service: {name: BUDDY, id: 4}
enums:
  Presence:
    values: {PRESENCE_UNKNOWN: 0, PRESENT: 5, ABSENT: 6}
messages:
  Stat:
    fields:
      user_id: {number: 1, type: uint64}
      status: {number: 2, type: Presence}
  Seen:
    fields:
      stat: {number: 1, type: Stat}
  SeenMany:
    fields:
      stats: {number: 3, type: Stat, label: repeated}
commands:
  CID_SEEN: {id: 0x0401, message: Seen, direction: s2c}
  CID_SEEN_MANY: {id: 0x0402, message: SeenMany, direction: s2c}
"""


@pytest.fixture
def stack(build_stack: Callable[[dict[str, str]], Any]) -> Any:
    return build_stack({"ttgen.yaml": MANIFEST, "buddy.yaml": MODULE})


def test_inline_policy_reaches_the_registry_resolved(stack: Any) -> None:
    registry = stack.module("registry").REGISTRY
    assert dict(registry.presence) == {
        "audience": ("subscribers",),
        "batch": "CID_SEEN_MANY",
        "batch_field": "stats",
        "batch_from": 3,
        "batch_owner_field": None,
        "clients": "all",
        "coalesce_ms": 250,
        "notify": "CID_SEEN",
        "notify_field": "stat",
        "offline": 6,
        "online": 5,
    }
    policy = PresencePolicy.from_registry(registry)
    assert policy.interval == 0.25 and not policy.company and policy.wants(True) and policy.wants(False)


def test_the_runtime_codec_speaks_the_generated_messages(stack: Any) -> None:
    registry = stack.module("registry").REGISTRY
    codec = PresenceCodec(PresencePolicy.from_registry(registry), registry)
    two = codec.pushes({1: 5, 2: 6})  # below batch_from: notifies
    assert [p.command for p in two] == ["CID_SEEN", "CID_SEEN"]
    (many,) = codec.pushes({1: 5, 2: 6, 2**40: 5})
    assert many.command == "CID_SEEN_MANY"
    msg, body = many.for_recipient(99)  # no owner field: the same bytes for everyone
    parsed = registry.by_name("CID_SEEN_MANY").message_class.FromString(body)
    assert codec.states_of("CID_SEEN_MANY", parsed) == {1: 5, 2: 6, 2**40: 5}
    assert body == many.for_recipient(7)[1] == msg.SerializeToString()


def test_a_batch_of_another_stat_type_is_refused(tmp_path: Any) -> None:
    stats = "stats: {number: 3, type: Stat, label: repeated}"
    module = MODULE.replace(stats, "ids: {number: 3, type: uint64}")
    (tmp_path / "ttgen.yaml").write_text(MANIFEST.lstrip())
    (tmp_path / "buddy.yaml").write_text(module.lstrip())
    with pytest.raises(SpecError) as err:
        check_spec(tmp_path)
    assert [(d.code, d.loc.line) for d in err.value.diagnostics] == [("TT802", 10)]


def test_defaults_and_a_bad_audience(tmp_path: Any) -> None:
    lean = MANIFEST.split("presence:")[0] + "presence: {notify: CID_SEEN, online: PRESENT, offline: ABSENT}\n"
    (tmp_path / "ttgen.yaml").write_text(lean.lstrip())
    (tmp_path / "buddy.yaml").write_text(MODULE.lstrip())
    spec, _ = check_spec(tmp_path)
    assert spec.presence is not None
    assert (spec.presence.audience, spec.presence.clients, spec.presence.coalesce, spec.presence.batch) == (
        ("company",),
        "pc",
        "0ms",
        None,
    )
    bad = MANIFEST.lstrip().replace("audience: subscribers", "audience: [frends]")
    (tmp_path / "ttgen.yaml").write_text(bad)
    with pytest.raises(SpecError) as err:
        check_spec(tmp_path)
    assert [(d.code, d.loc.line, d.loc.col) for d in err.value.diagnostics] == [("TT111", 6, 14)]

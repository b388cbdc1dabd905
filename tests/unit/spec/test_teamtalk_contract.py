"""The bundled spec reproduces TeamTalk's wire contract number for number.

Compares the compiled protobuf descriptors of the generated `generated.teamtalk` stack, and its command
registry, with the reference facts in tests/data/teamtalk/*.tsv: every message, field (number, label, type,
type name, default), enum value and command id. A difference in either direction (missing or extra) fails.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

TEAMTALK_PACKAGES = (
    "IM.BaseDefine",
    "IM.Login",
    "IM.Buddy",
    "IM.Message",
    "IM.Group",
    "IM.File",
    "IM.SwitchService",
    "IM.Other",
    "IM.Server",
)
FDP = descriptor_pb2.FieldDescriptorProto


def pb2(package: str) -> ModuleType:
    return importlib.import_module(f"generated.teamtalk.{package.replace('.', '_')}_pb2")


def file_proto(package: str) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    pb2(package).DESCRIPTOR.CopyToProto(proto)
    return proto


@pytest.fixture(scope="module")
def files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    return {pkg: file_proto(pkg) for pkg in TEAMTALK_PACKAGES}


@pytest.fixture(scope="module")
def registry() -> Any:
    return importlib.import_module("generated.teamtalk.registry").REGISTRY


def diff(expected: dict[Any, Any], actual: dict[Any, Any]) -> list[str]:
    """Human-readable differences between two fact tables, both directions."""
    out = [f"missing {key}: expected {expected[key]}" for key in sorted(expected.keys() - actual.keys())]
    out += [f"extra {key}: {actual[key]}" for key in sorted(actual.keys() - expected.keys())]
    out += [
        f"differs {key}: expected {expected[key]}, got {actual[key]}"
        for key in sorted(expected.keys() & actual.keys())
        if expected[key] != actual[key]
    ]
    return out


def assert_same(expected: dict[Any, Any], actual: dict[Any, Any]) -> None:
    problems = diff(expected, actual)
    assert not problems, f"{len(problems)} difference(s) from the TeamTalk contract:\n" + "\n".join(problems)


def test_every_teamtalk_package_is_one_proto2_file_with_teamtalk_options(files):
    for package, proto in files.items():
        assert proto.package == package
        assert proto.syntax in ("", "proto2"), f"{package}: syntax {proto.syntax!r}"
        assert proto.options.optimize_for == descriptor_pb2.FileOptions.LITE_RUNTIME, package
        assert proto.options.java_package == "com.mogujie.tt.protobuf", package


def test_messages_match_both_ways(files, teamtalk_facts):
    expected = {(r["package"], r["message"]) for r in teamtalk_facts.fields}
    # Messages without fields (IMHeartBeat, IMLogoutReq, ...) appear only in commands.tsv.
    expected |= {(r["package"], r["message"]) for r in teamtalk_facts.commands}
    actual = {(pkg, m.name) for pkg, proto in files.items() for m in proto.message_type}
    assert_same(dict.fromkeys(expected, "message"), dict.fromkeys(actual, "message"))
    nested = [
        (pkg, m.name, n.name)
        for pkg, proto in files.items()
        for m in proto.message_type
        for n in m.nested_type
    ]
    assert nested == [], "TeamTalk has no nested messages"


def test_fields_match_both_ways(files, teamtalk_facts):
    expected = {
        (r["package"], r["message"], r["field"]): (
            int(r["number"]),
            r["label"],
            r["type"],
            r["type_name"],
            r["default"],
        )
        for r in teamtalk_facts.fields
    }
    actual = {}
    for package, proto in files.items():
        for message in proto.message_type:
            for f in message.field:
                label = FDP.Label.Name(f.label).removeprefix("LABEL_").lower()
                type_ = FDP.Type.Name(f.type).removeprefix("TYPE_").lower()
                default = f.default_value if f.HasField("default_value") else ""
                actual[(package, message.name, f.name)] = (
                    f.number,
                    label,
                    type_,
                    f.type_name.lstrip("."),
                    default,
                )
    assert len(expected) == len(teamtalk_facts.fields), "duplicate field rows in fields.tsv"
    assert_same(expected, actual)


def test_field_less_messages_really_have_no_fields(files, teamtalk_facts):
    with_fields = {(r["package"], r["message"]) for r in teamtalk_facts.fields}
    empty = {(r["package"], r["message"]) for r in teamtalk_facts.commands} - with_fields
    assert ("IM.Other", "IMHeartBeat") in empty and ("IM.Login", "IMLogoutReq") in empty
    by_name = {(pkg, m.name): m for pkg, proto in files.items() for m in proto.message_type}
    for key in sorted(empty):
        assert key in by_name, f"missing field-less message {key}"
        assert list(by_name[key].field) == [], f"{key} must have no fields"


def test_enums_match_both_ways(files, teamtalk_facts):
    expected = {(r["package"], r["enum"], r["name"]): int(r["value"], 0) for r in teamtalk_facts.enums}
    actual = {
        (package, enum.name, value.name): value.number
        for package, proto in files.items()
        for enum in proto.enum_type
        for value in enum.value
    }
    assert len(expected) == len(teamtalk_facts.enums), "duplicate enum rows in enums.tsv"
    assert_same(expected, actual)


def test_command_ids_match_the_registry_both_ways(registry, teamtalk_facts):
    expected = {
        int(r["command_id"], 16): (
            r["command_enum_name"],
            int(r["service_id"]),
            f"{r['package']}.{r['message']}",
        )
        for r in teamtalk_facts.commands
    }
    teamtalk_services = {int(r["value"]) for r in teamtalk_facts.enums if r["enum"] == "ServiceID"}
    actual = {
        info.command_id: (info.name, info.service_id, info.message_class.DESCRIPTOR.full_name)
        for info in registry
        if info.service_id in teamtalk_services
    }
    assert len(expected) == len(teamtalk_facts.commands), "duplicate command ids in commands.tsv"
    assert_same(expected, actual)
    for cid, (_, service_id, _) in expected.items():
        assert cid >> 8 == service_id, f"0x{cid:04x}: the high byte must be the service id"


def test_command_id_enums_agree_with_the_registry(registry, teamtalk_facts):
    """Every *CmdID value of IM.BaseDefine is a registered command with that id, and vice versa."""
    cmd_enums = {r["name"]: int(r["value"], 0) for r in teamtalk_facts.enums if r["enum"].endswith("CmdID")}
    teamtalk_services = {int(r["value"]) for r in teamtalk_facts.enums if r["enum"] == "ServiceID"}
    registered = {info.name: info.command_id for info in registry if info.service_id in teamtalk_services}
    assert_same(cmd_enums, registered)


def test_extensions_never_reuse_a_teamtalk_id(registry, teamtalk_facts):
    teamtalk_services = {int(r["value"]) for r in teamtalk_facts.enums if r["enum"] == "ServiceID"}
    teamtalk_ids = {int(r["command_id"], 16) for r in teamtalk_facts.commands}
    teamtalk_ids |= {int(r["value"], 0) for r in teamtalk_facts.enums if r["enum"].endswith("CmdID")}
    extensions = [info for info in registry if info.service_id not in teamtalk_services]
    assert extensions, "the extension service has no commands"
    for info in extensions:
        assert info.command_id not in teamtalk_ids, info.name
        assert info.command_id >> 8 not in teamtalk_services, f"{info.name}: 0x{info.command_id:04x}"
        assert info.command_id >> 8 == info.service_id, info.name
    extension_services = {sid for sid in registry.services.values() if sid not in teamtalk_services}
    assert extension_services == {info.service_id for info in extensions}

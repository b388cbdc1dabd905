"""Loader tests: a small spec covering the language loads into the located model; file-level failures are
reported as diagnostics with locations, never as other exceptions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codegen.api import check_spec
from codegen.diagnostics import SpecError
from codegen.load import load_spec
from codegen.load.yamlpos import MAX_FILE_BYTES
from codegen.model import Loc

REPO = Path(__file__).resolve().parents[3]

MINI = {
    "ttgen.yaml": """\
spec: mini
version: 1.2.0-beta.1
doc: yes
options: {optimize_for: LITE_RUNTIME, cc_enable_arenas: true}
modules: [base.yaml, chat.yaml]
cluster: cluster.yaml
stages: stages.yaml
plugins: [plugins/shake.yaml]
""",
    "base.yaml": """\
module: Mini.Base
enums:
  Status:
    values:
      STATUS_OK: 0
      STATUS_FAIL: {value: 1, doc: it failed}
    reserved: {numbers: [5, 7-9, "100-max"], names: [STATUS_OLD]}
messages:
  User:
    fields:
      user_id: {number: 1, type: uint32, label: required, min: 1}
      name: {number: 2, type: string, label: optional, default: "", max_len: 64}
  User.Kind:
    fields:
      kind: {number: 1, type: Kind, label: optional, default: KIND_PERSON}
""",
    "chat.yaml": """\
module: Mini.Chat
service: {name: CHAT, id: 1, command_enum: Base.ChatCmd}
messages:
  SendReq:
    fields:
      to_id: {number: 1, type: uint32, label: required}
      user: {number: 2, type: Base.User, label: optional}
      props: {number: 3, type: "map<string, uint32>"}
      by_name: {number: 4, type: string, oneof: target}
      by_id: {number: 5, type: uint32, oneof: target}
      tags: {number: 6, type: string, label: repeated, max_items: 4}
    oneofs: [target]
  SendRsp:
    fields:
      status: {number: 1, type: .Mini.Base.Status, label: required}
commands:
  CID_SEND_REQ: {id: 0x0101, message: SendReq, direction: c2s, reply: CID_SEND_RSP}
  CID_SEND_RSP: {id: 0x0102, message: SendRsp, direction: s2c}
stages:
  SendReq: {input: {rate: 5/s}, present: {redact: [to_id]}}
""",
    "cluster.yaml": """\
services:
  chat:
    listen: tcp
    default_port: 9000
    hosts: [CID_SEND_REQ]
    links: [store]
  store: {role: storage}
""",
    "stages.yaml": """\
stages:
  CID_SEND_RSP:
    transport: {timeout: 5s}
    input:
""",
    "plugins/shake.yaml": """\
plugin: shake
requires: mini>=1.0,<2
module: Mini.Shake
service: {name: SHAKE, id: 2}
messages:
  ShakeReq: {fields: {user_id: {number: 1, type: uint32, label: required}}}
commands:
  CID_SHAKE: {id: 0x0201, message: ShakeReq, direction: c2s}
cluster:
  services:
    chat: {hosts: [CID_SHAKE]}
    shaker: {hosts: [CID_SHAKE], links: [chat]}
""",
}


def write_spec(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def fixed_base() -> str:
    """base.yaml with the enums a valid mini spec needs (ChatCmd, and User.Kind's nested enum Kind)."""
    return MINI["base.yaml"].replace(
        "messages:\n",
        "  ChatCmd:\n    values: {CID_SEND_REQ: 0x0101, CID_SEND_RSP: 0x0102}\n"
        "  User.Kind.Kind:\n    values: {KIND_PERSON: 0, KIND_BOT: 1}\n"
        "messages:\n",
    )


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    return write_spec(tmp_path, {**MINI, "base.yaml": fixed_base()})


def test_valid_spec_loads_and_checks_clean(spec_dir: Path) -> None:
    spec, warnings = check_spec(spec_dir)
    assert warnings == []
    assert (spec.name, spec.version, spec.syntax, spec.doc) == ("mini", "1.2.0-beta.1", "proto2", "yes")
    assert spec.options == (("optimize_for", "LITE_RUNTIME"), ("cc_enable_arenas", "true"))
    assert [m.package for m in spec.modules] == ["Mini.Base", "Mini.Chat", "Mini.Shake"]
    assert [m.file for m in spec.modules] == ["base.yaml", "chat.yaml", "plugins/shake.yaml"]
    assert spec.modules[2].plugin == "shake"


def test_type_references_are_qualified(spec_dir: Path) -> None:
    spec = load_spec(spec_dir)
    req = spec.messages()["Mini.Chat.SendReq"]
    fields = {f.name: f for f in req.fields}
    assert fields["user"].type == "Mini.Base.User"  # partially qualified, resolved from Mini.Chat outwards
    assert spec.messages()["Mini.Chat.SendRsp"].fields[0].type == "Mini.Base.Status"  # leading dot
    kind = spec.messages()["Mini.Base.User.Kind"].fields[0]
    assert kind.type == "Mini.Base.User.Kind.Kind"  # innermost scope first
    assert spec.commands()["CID_SEND_REQ"].message == "Mini.Chat.SendReq"
    assert spec.services()["CHAT"].command_enum == "Mini.Base.ChatCmd"


def test_field_shapes(spec_dir: Path) -> None:
    spec = load_spec(spec_dir)
    fields = {f.name: f for f in spec.messages()["Mini.Chat.SendReq"].fields}
    props = fields["props"]
    assert (props.map_key, props.type, props.label, props.explicit_label) == (
        "string",
        "uint32",
        "repeated",
        False,
    )
    assert (fields["by_name"].oneof, fields["by_name"].explicit_label) == ("target", False)
    assert fields["tags"].constraints.max_items == 4
    user = {f.name: f for f in spec.messages()["Mini.Base.User"].fields}
    assert user["name"].default == "" and user["name"].constraints.max_len == 64
    assert user["user_id"].constraints.min == 1


def test_enums_reserved_and_nesting(spec_dir: Path) -> None:
    spec = load_spec(spec_dir)
    status = spec.enums()["Mini.Base.Status"]
    assert [(v.name, v.value, v.doc) for v in status.values] == [
        ("STATUS_OK", 0, ""),
        ("STATUS_FAIL", 1, "it failed"),
    ]
    assert status.reserved.numbers == ((5, 5), (7, 9), (100, (1 << 31) - 1))
    assert status.reserved.names == ("STATUS_OLD",)
    outer = spec.messages()["Mini.Base.User.Kind"]
    assert [e.name for e in outer.nested_enums] == ["User.Kind.Kind"]
    assert "Mini.Base.User.Kind.Kind" in spec.enums()
    assert all(e.name != "User.Kind.Kind" for e in spec.modules[0].enums)


def test_locations_are_one_based_and_relative(spec_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(spec_dir.parent)
    spec = load_spec(spec_dir.name)
    req = spec.messages()["Mini.Chat.SendReq"]
    assert req.loc == Loc(f"{spec_dir.name}/chat.yaml", 4, 3)
    to_id = req.fields[0]
    assert to_id.loc == Loc(f"{spec_dir.name}/chat.yaml", 6, 7)
    assert to_id.key_locs["number"] == Loc(f"{spec_dir.name}/chat.yaml", 6, 23)
    assert str(spec.commands()["CID_SEND_RSP"].loc) == f"{spec_dir.name}/chat.yaml:18:3"


def test_cluster_and_plugin_merge(spec_dir: Path) -> None:
    spec = load_spec(spec_dir)
    services = spec.cluster_services()
    assert services["chat"].hosts == ("CID_SEND_REQ", "CID_SHAKE")  # the plugin added to a base service
    assert (services["chat"].listen, services["chat"].default_port, services["chat"].plugin) == (
        "tcp",
        9000,
        None,
    )
    assert services["store"].role == "storage" and services["chat"].role == "chat"
    assert services["shaker"].plugin == "shake" and services["shaker"].links == ("chat",)
    assert [(p.name, p.requires) for p in spec.plugins] == [("shake", "mini>=1.0,<2")]


def test_stage_policies_resolve_targets(spec_dir: Path) -> None:
    spec = load_spec(spec_dir)
    assert [p.target for p in spec.stages] == ["CID_SEND_RSP", "Mini.Chat.SendReq"]
    rsp = spec.stage_policy("CID_SEND_RSP")
    assert rsp is not None and rsp.transport == {"timeout": "5s"} and rsp.input == {}
    req = spec.stage_policy("Mini.Chat.SendReq")
    assert req is not None and req.present == {"redact": ["to_id"]}
    assert spec.effective_stages(spec.commands()["CID_SEND_REQ"])["input"] == {"rate": "5/s"}


def test_manifest_file_path_works_like_folder(spec_dir: Path) -> None:
    assert load_spec(spec_dir / "ttgen.yaml").messages().keys() == load_spec(spec_dir).messages().keys()


def test_all_problems_are_collected(tmp_path: Path) -> None:
    bad = (
        MINI["chat.yaml"]
        .replace("number: 1, type: uint32", "number: one, type: uint32")
        .replace("direction: s2c", "direction: down")
    )
    write_spec(tmp_path, {**MINI, "base.yaml": fixed_base(), "chat.yaml": bad})
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    codes = sorted(d.code for d in info.value.diagnostics)
    assert codes == ["TT105", "TT111"]
    assert str(info.value).startswith(str(info.value.diagnostics[0].loc))


def test_file_over_the_size_limit(tmp_path: Path) -> None:
    write_spec(tmp_path, {**MINI, "base.yaml": fixed_base()})
    (tmp_path / "chat.yaml").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    [diag] = info.value.diagnostics
    assert diag.code == "TT103"
    assert (Path(diag.loc.file).name, diag.loc.line, diag.loc.col) == (
        "ttgen.yaml",
        5,
        22,
    )  # where it is listed


def test_non_utf8_file(tmp_path: Path) -> None:
    write_spec(tmp_path, {**MINI, "base.yaml": fixed_base()})
    (tmp_path / "chat.yaml").write_bytes(b"module: \xff\xfe\n")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert [d.code for d in info.value.diagnostics] == ["TT102"]


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert [d.code for d in info.value.diagnostics] == ["TT101"]


def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    write_spec(tmp_path, {**MINI, "base.yaml": fixed_base()})
    (tmp_path / "chat.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert [d.code for d in info.value.diagnostics] in (["TT102"], ["TT103"])


@pytest.mark.skipif(not (REPO / "spec" / "teamtalk").is_dir(), reason="bundled spec not present")
def test_bundled_teamtalk_spec_checks_clean() -> None:
    spec, _ = check_spec(REPO / "spec" / "teamtalk")
    assert spec.name == "teamtalk"
    assert len(spec.commands()) > 50
    assert os.path.isabs(spec.root)


def test_plugin_with_module_files_and_cluster_file(spec_dir: Path) -> None:
    write_spec(
        spec_dir,
        {
            "plugins/shake.yaml": "plugin: shake\nmodules: [m/poke.yaml]\ncluster: poke_cluster.yaml\n"
            "stages: {CID_POKE: {transport: {ephemeral: true}}}\n",
            "plugins/m/poke.yaml": "module: Mini.Poke\nservice: {name: POKE, id: 3}\n"
            "messages: {Poke: {fields: {}}}\n"
            "commands: {CID_POKE: {id: 0x0301, message: Poke, direction: both}}\n",
            "plugins/poke_cluster.yaml": "services:\n  chat: {hosts: [CID_POKE]}\n",
        },
    )
    spec, _ = check_spec(spec_dir)
    poke = spec.modules[-1]
    assert (poke.package, poke.file, poke.plugin) == ("Mini.Poke", "plugins/m/poke.yaml", "shake")
    assert "CID_POKE" in spec.cluster_services()["chat"].hosts
    policy = spec.stage_policy("CID_POKE")
    assert policy is not None and policy.transport == {"ephemeral": True}


def test_plugin_including_a_base_module_is_circular(spec_dir: Path) -> None:
    write_spec(spec_dir, {"plugins/shake.yaml": "plugin: shake\nmodules: [../chat.yaml]\n"})
    with pytest.raises(SpecError) as info:
        load_spec(spec_dir)
    [diag] = info.value.diagnostics
    assert (diag.code, Path(diag.loc.file).name, diag.loc.line, diag.loc.col) == (
        "TT108",
        "shake.yaml",
        2,
        11,
    )

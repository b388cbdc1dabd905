"""Codegen model layer: the JSON Schema (draft 2020-12) of the spec language, for editors and `ttgen schema`.

Built in Python from the same key lists the loader accepts (a test keeps them in step), and written to
`codegen/schema/spec.schema.json` (a test checks that file is fresh).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codegen.load import FRAME_KEYS, MANIFEST_KEYS, PLUGIN_KEYS
from codegen.load.extras import CLUSTER_KEYS, LISTEN, PRESENCE_KEYS
from codegen.load.extras import SERVICE_KEYS as CLUSTER_SERVICE_KEYS
from codegen.load.modules import (
    COMMAND_KEYS,
    DIRECTIONS,
    ENUM_KEYS,
    ENUM_VALUE_KEYS,
    FIELD_KEYS,
    LABELS,
    MESSAGE_KEYS,
    MODULE_KEYS,
    SERVICE_KEYS,
)
from codegen.load.web import (
    BODIES,
    EVENT_KEYS,
    HTTP_METHODS,
    TYPE_KEYS,
    WEB_KEYS,
)
from codegen.load.web import COMMAND_KEYS as WEB_COMMAND_KEYS
from codegen.load.web import FIELD_KEYS as WEB_FIELD_KEYS
from codegen.model import PRESENCE_AUDIENCES, PRESENCE_CLIENTS, STAGES, WIRE_FORMATS
from codegen.stages_schema import DURATION_RE, STAGE_KEYS, json_schema_for

SCHEMA_FILE = Path(__file__).parent / "schema" / "spec.schema.json"
SCHEMA_ID = "https://ttgen.dev/schema/spec.schema.json"
FILE_KINDS = ("manifest", "module", "cluster", "stages", "presence", "web", "plugin")

_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_STR_LIST = {"type": "array", "items": _STR}
_IDENT = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}
_RESERVED = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "numbers": {
            "type": "array",
            "items": {"anyOf": [_INT, {"type": "string", "pattern": r"^\d+\s*-\s*(\d+|max)$"}]},
        },
        "names": _STR_LIST,
    },
}


def _obj(
    props: dict[str, Any], keys: tuple[str, ...], required: tuple[str, ...] = (), doc: str = ""
) -> dict[str, Any]:
    """An object schema; asserts the properties are exactly the loader's key list."""
    assert set(props) == set(keys), sorted(set(props) ^ set(keys))
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        out["required"] = list(required)
    if doc:
        out["description"] = doc
    return out


def _named(ref: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": {"$ref": f"#/$defs/{ref}"}}


def _defs() -> dict[str, Any]:
    field = _obj(
        {
            "number": {"type": "integer", "minimum": 1, "maximum": (1 << 29) - 1},
            "type": {"type": "string", "description": "scalar, message or enum name, or map<K, V>"},
            "label": {"enum": list(LABELS)},
            "default": {"description": "proto2 default: a scalar literal or an enum value name"},
            "doc": _STR,
            "max_len": _INT,
            "min_len": _INT,
            "non_empty": _BOOL,
            "min": {"type": "number"},
            "max": {"type": "number"},
            "max_items": _INT,
            "pattern": _STR,
            "oneof": _STR,
            "renamed_from": _STR,
            "deprecated": _BOOL,
        },
        FIELD_KEYS,
        ("number", "type"),
    )
    enum_value = {
        "anyOf": [
            _INT,
            _obj({"value": _INT, "doc": _STR, "renamed_from": _STR}, ENUM_VALUE_KEYS, ("value",)),
        ]
    }
    enum = _obj(
        {
            "values": _named("enum_value"),
            "doc": _STR,
            "reserved": _RESERVED,
            "allow_alias": _BOOL,
            "renamed_from": _STR,
            "bits": {
                "type": "object",
                "additionalProperties": _INT,
                "description": "named bits of the values (name -> mask), emitted into the registry",
            },
        },
        ENUM_KEYS,
        ("values",),
    )
    message = _obj(
        {
            "fields": _named("field"),
            "doc": _STR,
            "oneofs": _STR_LIST,
            "reserved": _RESERVED,
            "renamed_from": _STR,
        },
        MESSAGE_KEYS,
    )
    command = _obj(
        {
            "id": _INT,
            "message": _STR,
            "direction": {"enum": list(DIRECTIONS)},
            "reply": _STR,
            "doc": _STR,
            "renamed_from": _STR,
            "deprecated": _BOOL,
        },
        COMMAND_KEYS,
        ("id", "message", "direction"),
    )
    service = _obj(
        {
            "name": _IDENT,
            "id": {"type": "integer", "minimum": 0, "maximum": 0xFFFF},
            "id_enum": _STR,
            "command_enum": _STR,
            "range": {"type": "array", "items": _INT, "minItems": 2, "maxItems": 2},
            "doc": _STR,
        },
        SERVICE_KEYS,
        ("name", "id"),
    )
    policy = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            stage: {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {key: json_schema_for(spec) for key, spec in STAGE_KEYS[stage].items()},
            }
            for stage in STAGES
        },
    }
    options = {"type": "object", "additionalProperties": {"type": ["string", "boolean", "number"]}}
    module_props: dict[str, Any] = {
        "module": {"type": "string", "description": "protobuf package, e.g. IM.Login"},
        "doc": _STR,
        "options": options,
        "service": {"$ref": "#/$defs/service"},
        "enums": _named("enum"),
        "messages": _named("message"),
        "commands": _named("command"),
        "stages": _named("stage_policy"),
    }
    cluster_service = _obj(
        {
            "role": _STR,
            "doc": _STR,
            "listen": {"enum": list(LISTEN)},
            "default_port": {"type": "integer", "minimum": 0, "maximum": 65535},
            "hosts": _STR_LIST,
            "receives": {
                **_STR_LIST,
                "description": "commands linked services deliver (relays, pushes): a second server base",
            },
            "links": _STR_LIST,
        },
        CLUSTER_SERVICE_KEYS,
    )
    cluster = _obj({"services": _named("cluster_service")}, CLUSTER_KEYS, ("services",))
    stages_file = _obj({"stages": _named("stage_policy")}, ("stages",), ("stages",))
    audience = {"enum": list(PRESENCE_AUDIENCES)}
    presence_policy = _obj(
        {
            "doc": _STR,
            "audience": {"anyOf": [audience, {"type": "array", "items": audience}]},
            "clients": {"enum": list(PRESENCE_CLIENTS)},
            "coalesce": {"type": "string", "pattern": DURATION_RE.pattern},
            "notify": {"type": "string", "description": "command pushing one user's change"},
            "batch": {"type": "string", "description": "command pushing many users' states"},
            "batch_from": {"type": "integer", "minimum": 2},
            "online": {"type": "string", "description": "status enum value meaning online"},
            "offline": {"type": "string", "description": "status enum value meaning offline"},
        },
        PRESENCE_KEYS,
        ("notify", "online", "offline"),
        doc="presence fan-out: audience, client class, coalescing interval, commands",
    )
    presence_file = _obj({"presence": {"$ref": "#/$defs/presence_policy"}}, ("presence",), ("presence",))
    web_type_text = {
        "type": "string",
        "pattern": r"^\s*[A-Za-z_][A-Za-z0-9_.]*(\[\])?\??\s*$",
        "description": "string, int, number, bool, json, a web type, or a qualified message or enum; "
        "T[] a list, T? may be absent",
    }
    web_fields = {
        "type": "object",
        "additionalProperties": {
            "anyOf": [web_type_text, _obj({"type": web_type_text, "doc": _STR}, WEB_FIELD_KEYS, ("type",))]
        },
    }
    path = {"type": "string", "pattern": r"^/[A-Za-z0-9_./-]*$"}
    web_section = _obj(
        {
            "doc": _STR,
            "http": path,
            "websocket": path,
            "enums": _STR_LIST,
            "types": {
                "type": "object",
                "additionalProperties": _obj({"doc": _STR, "fields": web_fields}, TYPE_KEYS, ("fields",)),
            },
            "commands": {
                "type": "object",
                "additionalProperties": _obj(
                    {
                        "doc": _STR,
                        "http": {
                            "type": "string",
                            "pattern": "^(" + "|".join(HTTP_METHODS) + r") /[A-Za-z0-9_./-]*$",
                        },
                        "ws": _BOOL,
                        "auth": _BOOL,
                        "body": {"enum": list(BODIES)},
                        "request": web_fields,
                        "reply": web_fields,
                    },
                    WEB_COMMAND_KEYS,
                ),
            },
            "events": {
                "type": "object",
                "additionalProperties": _obj(
                    {"doc": _STR, "fields": web_fields, "data": _STR}, EVENT_KEYS
                ),
            },
        },
        WEB_KEYS,
        doc="the gateway's JSON API for browsers, from which the browser client is generated",
    )
    web_file = _obj({"web": {"$ref": "#/$defs/web_section"}}, ("web",), ("web",))
    manifest = _obj(
        {
            "spec": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*$"},
            "version": {"type": "string", "description": "semver, e.g. 1.2.0"},
            "syntax": {"enum": ["proto2", "proto3"]},
            "wire": {
                "enum": list(WIRE_FORMATS),
                "description": "binary (default): bodies travel as protobuf binary only; json: peers also "
                "exchange the protobuf JSON form, so field and enum value names are part of the wire",
            },
            "doc": _STR,
            "frame": _obj(
                {"kind": {"enum": ["teamtalk16"]}, "max_frame_bytes": _INT, "version": _INT}, FRAME_KEYS
            ),
            "options": options,
            "modules": _STR_LIST,
            "cluster": {"anyOf": [_STR, {"$ref": "#/$defs/cluster"}]},
            "stages": {"anyOf": [_STR, _named("stage_policy")]},
            "presence": {"anyOf": [_STR, {"$ref": "#/$defs/presence_policy"}]},
            "web": {"anyOf": [_STR, {"$ref": "#/$defs/web_section"}]},
            "plugins": _STR_LIST,
            "output": _STR,
            "docs_output": _STR,
        },
        MANIFEST_KEYS,
        ("spec", "version", "modules"),
        doc="ttgen.yaml: the spec manifest",
    )
    plugin = _obj(
        {
            **module_props,
            "plugin": _IDENT,
            "requires": {"type": "string", "description": "spec name and version range, e.g. teamtalk>=1.0"},
            "modules": _STR_LIST,
            "cluster": {"anyOf": [_STR, {"$ref": "#/$defs/cluster"}]},
        },
        PLUGIN_KEYS,
        ("plugin",),
        doc="a plugin fragment",
    )
    return {
        "manifest": manifest,
        "module": _obj(module_props, MODULE_KEYS, ("module",), doc="a module file: one protobuf package"),
        "cluster": cluster,
        "stages": stages_file,
        "presence": presence_file,
        "presence_policy": presence_policy,
        "web": web_file,
        "web_section": web_section,
        "plugin": plugin,
        "service": service,
        "enum": enum,
        "enum_value": enum_value,
        "message": message,
        "field": field,
        "command": command,
        "stage_policy": policy,
        "cluster_service": cluster_service,
    }


def spec_schema() -> dict[str, Any]:
    """The whole schema: any of the file kinds (manifest, module, cluster, stages, presence, web, plugin)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "ttgen spec file",
        "description": "A file of a ttgen spec: " + ", ".join(FILE_KINDS) + ". See docs/spec-language.md.",
        "anyOf": [{"$ref": f"#/$defs/{kind}"} for kind in FILE_KINDS],
        "$defs": _defs(),
    }


def schema_text() -> str:
    """The schema as stable, pretty-printed JSON text (the content of `spec.schema.json`)."""
    return json.dumps(spec_schema(), indent=2, sort_keys=True) + "\n"


def write_schema_file() -> Path:
    """Regenerate `codegen/schema/spec.schema.json`."""
    SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
    return SCHEMA_FILE

"""Unit tests of the protoc driver: in-process compilation, relative imports, errors as TT901 diagnostics."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2

from codegen.diagnostics import SpecError
from codegen.model import Field, Loc, Message, Module, Spec
from codegen.protoc import compile_protos, locate, relative_imports

A = 'syntax = "proto3";\npackage Protoc.UnitA;\nmessage A { int32 x = 1; }\n'
B = (
    'syntax = "proto3";\npackage Protoc.UnitB;\nimport "Protoc_UnitA.proto";\n'
    'import "google/protobuf/timestamp.proto";\n'
    "message B { Protoc.UnitA.A a = 1; google.protobuf.Timestamp at = 2; }\n"
)


def test_compiles_modules_stubs_and_descriptor_set() -> None:
    result = compile_protos({"Protoc_UnitA.proto": A, "Protoc_UnitB.proto": B})
    assert sorted(result.modules) == [
        "Protoc_UnitA_pb2.py",
        "Protoc_UnitA_pb2.pyi",
        "Protoc_UnitB_pb2.py",
        "Protoc_UnitB_pb2.pyi",
    ]
    b_py = result.modules["Protoc_UnitB_pb2.py"]
    assert "from . import Protoc_UnitA_pb2 as Protoc__UnitA__pb2" in b_py
    assert "from google.protobuf import timestamp_pb2" in b_py  # well-known types stay absolute
    assert "from . import Protoc_UnitA_pb2 as _Protoc_UnitA_pb2" in result.modules["Protoc_UnitB_pb2.pyi"]
    fds = descriptor_pb2.FileDescriptorSet.FromString(result.descriptor_set)
    names = [f.name for f in fds.file]
    # --include_imports: dependencies first, the well-known type included, no absolute paths anywhere.
    assert names.index("Protoc_UnitA.proto") < names.index("Protoc_UnitB.proto")
    assert "google/protobuf/timestamp.proto" in names
    assert b"/tmp" not in result.descriptor_set


def test_output_is_deterministic() -> None:
    protos = {"Protoc_UnitA.proto": A, "Protoc_UnitB.proto": B}
    assert compile_protos(protos) == compile_protos(protos)


def test_relative_imports_leave_foreign_modules_alone() -> None:
    src = "import X_pb2 as X__pb2\nimport Other_pb2 as O\nfrom X_pb2 import Y as Z\n"
    assert relative_imports(src, {"X.proto"}) == (
        "from . import X_pb2 as X__pb2\nimport Other_pb2 as O\nfrom .X_pb2 import Y as Z\n"
    )


def test_protoc_error_is_tt901_at_the_spec_field() -> None:
    field_loc = Loc("spec/m.yaml", 7, 9)
    bad_field = Field("y", 1, "Nope", "optional", field_loc)
    message = Message("Bad", "Protoc.UnitC", (bad_field,), Loc("spec/m.yaml", 5, 3))
    module = Module("Protoc.UnitC", "m.yaml", Loc("spec/m.yaml", 1, 1), messages=(message,))
    spec = Spec("c", "1.0.0", "proto3", "/x", Loc("spec/ttgen.yaml"), modules=(module,))
    text = 'syntax = "proto3";\npackage Protoc.UnitC;\n\nmessage Bad {\n  Nope y = 1;\n}\n'
    with pytest.raises(SpecError) as info:
        compile_protos({"Protoc_UnitC.proto": text}, spec=spec)
    diags = info.value.diagnostics
    assert diags and all(d.code == "TT901" for d in diags)
    assert diags[0].loc == field_loc
    assert "Protoc_UnitC.proto:5:" in diags[0].message and "Nope" in diags[0].message


def test_locate_falls_back_to_message_then_module() -> None:
    loc_m = Loc("m.yaml", 3, 1)
    module = Module("P.Q", "m.yaml", Loc("m.yaml", 1, 1), messages=(Message("M", "P.Q", (), loc_m),))
    spec = Spec("s", "1", "proto3", "/x", Loc("t.yaml"), modules=(module,))
    text = 'syntax = "proto3";\nmessage M {\n  int32 gone = 1;\n}\n'
    assert locate(spec, "P_Q.proto", text, 3) == loc_m
    assert locate(spec, "P_Q.proto", text, 1) == module.loc
    assert locate(None, "P_Q.proto", text, 3) == Loc("P_Q.proto", 3, 0)

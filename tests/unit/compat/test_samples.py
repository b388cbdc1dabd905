"""Compat samples: the full, minimal and every-enum-value variants, and comparison by name and number."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from ttgen.compat.samples import compare, variants


def _classes(version: str, fields: dict[str, tuple[int, str, str]], moods: dict[str, int]) -> type[Message]:
    """A `Probe.Note` class from its own pool: fields name -> (number, label, type), Mood name -> number."""
    fdp = descriptor_pb2.FileDescriptorProto(name=f"probe_{version}.proto", package="Probe", syntax="proto2")
    enum = fdp.enum_type.add(name="Mood")
    for name, number in moods.items():
        enum.value.add(name=name, number=number)
    note = fdp.message_type.add(name="Note")
    labels = {"optional": 1, "required": 2, "repeated": 3}
    for name, (number, label, type_name) in fields.items():
        f = note.field.add(name=name, number=number, label=labels[label])  # type: ignore[arg-type]
        if type_name == "Mood":
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_ENUM
            f.type_name = ".Probe.Mood"
        else:
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_UINT32
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("Probe.Note"))


MOODS = {"MOOD_NONE": 0, "MOOD_HAPPY": 1, "MOOD_SAD": 2, "MOOD_ANGRY": 3}
FIELDS = {
    "user_id": (1, "required", "uint32"),
    "count": (2, "optional", "uint32"),
    "mood": (3, "optional", "Mood"),
    "moods": (4, "repeated", "Mood"),
}


def test_variants_leave_optionals_unset_and_use_every_enum_value() -> None:
    cls = _classes("a", FIELDS, MOODS)
    named = dict(variants(cls))
    assert list(named)[:2] == ["full", "minimal"]
    assert [f.name for f, _ in named["minimal"].ListFields()] == ["user_id"]
    assert {f.name for f, _ in named["full"].ListFields()} == set(FIELDS)
    used = {m.mood for m in named.values() if m.HasField("mood")}
    assert used == set(MOODS.values())


def test_identical_messages_compare_clean() -> None:
    cls = _classes("a", FIELDS, MOODS)
    for _, sent in variants(cls):
        result = compare(sent, cls.FromString(sent.SerializeToString()))
        assert (result.broken, result.lost, result.carried) == ([], [], [])


def _across(sender: type[Message], receiver: type[Message], sent: Message):  # type: ignore[no-untyped-def]
    return compare(sent, receiver.FromString(sent.SerializePartialToString()))


def test_a_field_the_receiver_declares_under_another_number_is_broken() -> None:
    old = _classes("a", FIELDS, MOODS)
    new = _classes("b", {**FIELDS, "count": (7, "optional", "uint32")}, MOODS)
    result = _across(old, new, dict(variants(old))["full"])
    assert result.broken == ["count: sent as field 2, but the receiver declares count = 7"]


def test_a_renamed_field_survives_and_an_undeclared_one_is_carried() -> None:
    old = _classes("a", FIELDS, MOODS)
    renamed = {("total" if k == "count" else k): v for k, v in FIELDS.items()}
    result = _across(old, _classes("b", renamed, MOODS), dict(variants(old))["full"])
    assert (result.broken, result.lost, result.carried) == ([], [], [])
    without = {k: v for k, v in FIELDS.items() if k != "count"}
    result = _across(old, _classes("c", without, MOODS), dict(variants(old))["full"])
    assert (result.broken, result.lost, result.carried) == ([], [], ["count"])


def test_enum_values_are_matched_by_name_and_number() -> None:
    old = _classes("a", FIELDS, MOODS)
    sad = old(user_id=1, mood=2, moods=[2, 1])
    renumbered = _classes("b", FIELDS, {**MOODS, "MOOD_SAD": 5})
    result = _across(old, renumbered, sad)
    assert result.broken == [
        "mood: sent MOOD_SAD = 2, but the receiver declares MOOD_SAD = 5",
        "moods: sent MOOD_SAD = 2, but the receiver declares MOOD_SAD = 5",
    ]
    swapped = _classes("c", FIELDS, {**MOODS, "MOOD_SAD": 3, "MOOD_ANGRY": 2})
    result = _across(old, swapped, sad)
    assert (
        result.broken[0]
        == "mood: sent MOOD_SAD = 2, the receiver reads MOOD_ANGRY (it declares MOOD_SAD = 3)"
    )
    renamed = _classes("d", FIELDS, {"MOOD_NONE": 0, "MOOD_HAPPY": 1, "MOOD_BLUE": 2, "MOOD_ANGRY": 3})
    assert _across(old, renamed, sad).broken == []
    fewer = _classes("e", FIELDS, {"MOOD_NONE": 0, "MOOD_HAPPY": 1})
    result = _across(old, fewer, sad)
    assert (result.broken, result.lost, result.carried) == ([], [], ["mood=MOOD_SAD", "moods=MOOD_SAD"])


def test_lost_values_are_reported() -> None:
    old = _classes("a", FIELDS, MOODS)
    single = _classes("b", {**FIELDS, "moods": (4, "optional", "Mood")}, MOODS)
    result = _across(old, single, old(user_id=1, moods=[1, 3]))
    assert result.lost == ["moods: sent 2 value(s), received 1"]

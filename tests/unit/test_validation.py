"""Segment rule validation: what is accepted and how it is normalised, every kind of error with its
message and JSON path, the limits, and hostile documents."""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import pytest
from marshmallow import Schema, ValidationError, fields

from contact_segments.rules import apply
from contact_segments.rules.validation import (
    RuleValidationError,
    SegmentRule,
    SegmentRuleSchema,
    validate_segment_rule,
)
from tests.support.views import contact_view

NOW = 1_770_000_000


def problems(doc: Any) -> dict[str, str]:
    with pytest.raises(RuleValidationError) as caught:
        validate_segment_rule(doc)
    return caught.value.messages


def contact(**fields: Any) -> dict[str, Any]:
    return contact_view(now=NOW, **fields)


V = {"var": "country"}

# ----------------------------------------------------------------------------- accepted rules

ACCEPTED = [
    True,
    False,
    {"var": "country"},
    {"!!": [{"var": "tags"}]},
    {"!": [{"var": "custom_fields.vip"}]},
    {"and": [{"==": [V, "MY"]}, {"in": ["promotion", {"var": "tags"}]}]},
    {"or": [{"===": [V, None]}, {"!==": [V, "SG"]}, {"!=": [V, "ID"]}]},
    {"in": ["@acme.com", {"var": "email"}]},
    {"in": ["vip", {"var": "custom_fields.note"}]},
    {"in": [V, ["MY", "SG", None]]},
    {"in": [{"var": "custom_fields.level"}, [1, "gold", True]]},
    {">": [{"var": "created_at"}, {"-": [{"var": "now"}, 604800]}]},
    {"<": [{"-": [{"var": "now"}, 60]}, {"var": "created_at"}, {"+": [{"var": "now"}, 60]}]},
    {"<=": [0, {"var": "last_incoming_message_at"}, {"var": "now"}]},
    {">=": [{"var": "custom_fields.score"}, 2.5]},
    {"==": [{"var": "created_at"}, 1700000000]},
    {"==": [{"var": "custom_fields.flag"}, False]},
    {"missing": ["country", "custom_fields.x"]},
    {"missing_some": [1, ["country", "language"]]},
    {"if": [{"var": "country"}, {"var": "language"}, False]},
    {"if": [{"var": "country"}, True]},
    {"==": [{"var": ["country", "MY"]}, "MY"]},
    {"<": [{"var": ["created_at", 0]}, 1]},
]


@pytest.mark.parametrize("rule", ACCEPTED, ids=json.dumps)
def test_segment_rules_are_accepted_unchanged_when_already_canonical(rule: Any) -> None:
    assert validate_segment_rule(rule) == rule


NORMALISED = [
    ({"!!": {"var": "tags"}}, {"!!": [{"var": "tags"}]}),
    ({"var": ["country"]}, {"var": "country"}),
    ({"var": ["country", None]}, {"var": "country"}),
    ({"!": {"var": ["email"]}}, {"!": [{"var": "email"}]}),
    ({"missing": "country"}, {"missing": ["country"]}),
    ({"missing": [["country", "language"]]}, {"missing": ["country", "language"]}),
    ({"?:": [{"var": "country"}, True, False]}, {"if": [{"var": "country"}, True, False]}),
    ({"and": {"var": "country"}}, {"and": [{"var": "country"}]}),
    (
        {"<": [{"var": "created_at"}, {"-": [{"var": "now"}, 86400.0]}]},
        {"<": [{"var": "created_at"}, {"-": [{"var": "now"}, 86400]}]},
    ),
    ({"missing_some": [1.0, ["country"]]}, {"missing_some": [1, ["country"]]}),
    ('{"!!": {"var": "tags"}}', {"!!": [{"var": "tags"}]}),
    (b'{"in": ["vip", {"var": "tags"}]}', {"in": ["vip", {"var": "tags"}]}),
]


@pytest.mark.parametrize(
    ("doc", "canonical"), NORMALISED, ids=lambda v: json.dumps(v) if not isinstance(v, bytes) else "bytes"
)
def test_rules_are_normalised_to_one_canonical_form(doc: Any, canonical: Any) -> None:
    assert validate_segment_rule(doc) == canonical


@pytest.mark.parametrize(
    ("doc", "canonical"), [case for case in NORMALISED if not isinstance(case[0], str | bytes)]
)
def test_the_normalised_rule_means_the_same(doc: Any, canonical: Any) -> None:
    contacts = [
        contact(),
        contact(country="MY", tags=["vip"], created_at=NOW - 100),
        contact(email="a@b.c", language="ms", created_at=NOW - 86401),
        contact(country="", tags=["a", "b"], created_at=NOW),
    ]
    for data in contacts:
        assert apply(canonical, data) == apply(doc, data)


# ----------------------------------------------------------------------------- one test per error

ERRORS = {
    "unknown field": (
        {"and": [{"==": [V, "MY"]}, {"==": [{"var": "contry"}, "MY"]}]},
        {"$.and[1].==[0].var": "unknown field 'contry'"},
    ),
    "unknown field in the list form of var": (
        {"!!": [{"var": ["tag"]}]},
        {"$.!![0].var[0]": "unknown field 'tag'"},
    ),
    "empty var reads the whole contact": (
        {"!!": [{"var": ""}]},
        {"$.!![0].var": "name a field: an empty name reads the whole contact"},
    ),
    "var name that is not a string": (
        {"!!": [{"var": 1}]},
        {"$.!![0].var": "a field name must be a string, found a number"},
    ),
    "var with too many arguments": (
        {"!!": [{"var": ["country", "MY", "x"]}]},
        {"$.!![0].var": "'var' takes a field name and an optional default, found 3 arguments"},
    ),
    "var default of the wrong type": (
        {"==": [{"var": ["created_at", "yesterday"]}, 5]},
        {"$.==[0].var[1]": "the default of 'created_at' must be a number, not a string"},
    ),
    "var default on a custom field": (
        {"==": [{"var": ["custom_fields.score", 0]}, 3]},
        {"$.==[0].var[1]": "a default for a custom field is not supported in segment rules"},
    ),
    "var default on a list field": (
        {"!!": [{"var": ["tags", "vip"]}]},
        {"$.!![0].var[1]": "'tags' (string list) takes no default"},
    ),
    "unknown operator": (
        {"and": [{"foo": [1]}]},
        {"$.and[0].foo": "unknown operator 'foo'"},
    ),
    "valid JSONLogic the SQL compiler cannot evaluate": (
        {"==": [{"cat": ["a", "b"]}, "ab"]},
        {
            "$.==[0].cat": "'cat' is valid JSONLogic but not supported in segment rules: the SQL compiler cannot evaluate it"
        },
    ),
    "reduce as a condition": (
        {"reduce": [[1], {"var": "accumulator"}, 0]},
        {
            "$.reduce": "'reduce' is valid JSONLogic but not supported in segment rules: the SQL compiler cannot evaluate it"
        },
    ),
    "arithmetic on a field": (
        {">": [{"+": [{"var": "created_at"}, 5]}, 10]},
        {"$.>[0].+[0]": 'time arithmetic starts from now: {"+": [{"var": "now"}, N]}'},
    ),
    "arithmetic that is not time arithmetic": (
        {">": [{"var": "created_at"}, {"-": [{"var": "now"}, 1, 2]}]},
        {
            "$.>[1].-": "'-' is supported only as time arithmetic, "
            '{"-": [{"var": "now"}, N]} with N a number of seconds, compared with a timestamp'
        },
    ),
    "a boolean where a number of seconds is expected": (
        {">": [{"var": "created_at"}, {"-": [{"var": "now"}, True]}]},
        {"$.>[1].-[1]": "the seconds added to or taken from now must be a number, not a boolean"},
    ),
    "object with several keys": (
        {"or": [{"==": [V, "MY"], "!=": [V, "SG"]}]},
        {"$.or[0]": "an operation is an object with exactly one key, found 2: '==', '!='"},
    ),
    "empty object": (
        {"or": [{}]},
        {"$.or[0]": "an empty object is not an operation"},
    ),
    "wrong arity of ==": (
        {"==": [V, "MY", "SG"]},
        {"$.==": "'==' takes 2 arguments, found 3 arguments"},
    ),
    "wrong arity of !": (
        {"!": []},
        {"$.!": "'!' takes 1 argument, found 0 arguments"},
    ),
    "three arguments to >": (
        {">": [1, {"var": "created_at"}, 3]},
        {"$.>": "'>' takes 2 arguments, found 3 arguments"},
    ),
    "four arguments to <": (
        {"<": [1, {"var": "created_at"}, 3, 4]},
        {"$.<": "'<' takes 2 arguments, or 3 for a between, found 4 arguments"},
    ),
    "and without conditions": (
        {"and": []},
        {"$.and": "'and' needs at least one condition"},
    ),
    "if without a result": (
        {"if": [True]},
        {"$.if": "'if' takes a condition, a result and optionally more of both and an else, found 1"},
    ),
    "missing without fields": (
        {"missing": []},
        {"$.missing": "'missing' needs at least one field name"},
    ),
    "missing of an unknown field": (
        {"missing": ["country", "contry"]},
        {"$.missing[1]": "unknown field 'contry'"},
    ),
    "missing of now": (
        {"missing": ["now"]},
        {"$.missing[0]": "'now' is always present: it cannot be missing"},
    ),
    "missing_some count out of range": (
        {"missing_some": [3, ["country", "language"]]},
        {"$.missing_some[0]": "how many fields must be present: a whole number from 1 to 2"},
    ),
    "missing_some without a list": (
        {"missing_some": [1, "country"]},
        {"$.missing_some[1]": "expected a non-empty list of field names, found a string"},
    ),
    "ordering a string list": (
        {"<": [{"var": "tags"}, 5]},
        {"$.<[0]": "'<' cannot be applied to 'tags' (string list)"},
    ),
    "ordering a string field": (
        {">": [V, "M"]},
        {"$.>[0]": "'>' cannot be applied to 'country' (string)"},
    ),
    "equality on a string list": (
        {"==": [{"var": "tags"}, "vip"]},
        {"$.==[0]": "'==' cannot be applied to 'tags' (string list)"},
    ),
    "substring of a timestamp": (
        {"in": ["2026", {"var": "created_at"}]},
        {"$.in[1]": "'in' cannot look inside 'created_at' (timestamp)"},
    ),
    "a number looked for in a string list": (
        {"in": [1, {"var": "tags"}]},
        {"$.in[0]": "'in' looks for a string in 'tags' (string list), not a number"},
    ),
    "a string list looked up in a list": (
        {"in": [{"var": "tags"}, ["vip"]]},
        {"$.in[0]": "'tags' (string list) cannot be looked up in a list of values"},
    ),
    "in of another shape": (
        {"in": [V, "MYSG"]},
        {
            "$.in": '\'in\' takes a string and a field ({"in": ["vip", {"var": "tags"}]}) '
            'or a field and a list of values ({"in": [{"var": "country"}, ["MY", "SG"]]})'
        },
    ),
    "empty list of values": (
        {"in": [V, []]},
        {"$.in[1]": "the list of values is empty"},
    ),
    "a value of the wrong type in a list": (
        {"in": [V, ["MY", 60]]},
        {"$.in[1][1]": "'country' (string) can be compared with a string or null, not a number"},
    ),
    "string field compared with a number": (
        {"==": [V, 60]},
        {"$.==[1]": "'country' (string) can be compared with a string or null, not a number"},
    ),
    "timestamp compared with a string": (
        {">": [{"var": "created_at"}, "2026-01-01"]},
        {"$.>[1]": "'created_at' (timestamp) is ordered against a number or now ± N seconds, not a string"},
    ),
    "bool where a number is expected": (
        {"<": [{"var": "custom_fields.score"}, True]},
        {"$.<[1]": "'custom_fields.score' (custom field) is ordered against a number, not a boolean"},
    ),
    "custom field compared with now": (
        {"<": [{"var": "custom_fields.score"}, {"var": "now"}]},
        {
            "$.<[1]": "'custom_fields.score' (custom field) is ordered against a number, not an operation 'var'"
        },
    ),
    "custom field compared with an object": (
        {"==": [{"var": "custom_fields.x"}, {"and": [True]}]},
        {"$.==[1].and": "an operation 'and' cannot be compared: compare a field with values"},
    ),
    "now compared by equality": (
        {"==": [{"var": "created_at"}, {"var": "now"}]},
        {"$.==[1]": "now can only be compared with a timestamp field by <, <=, > or >="},
    ),
    "a list outside in": (
        {"==": [V, ["MY"]]},
        {"$.==[1]": "a list of values can only be the second argument of 'in'"},
    ),
    "between with the field at an end": (
        {"<=": [{"var": "created_at"}, 1, 2]},
        {"$.<=": "in the 3-argument form of '<=' the field goes in the middle: [low, field, high]"},
    ),
    "comparison without a field": (
        {"<": [{"var": "now"}, 1700000000]},
        {"$.<": "'<' compares one field with values, found no field"},
    ),
    "comparison of two fields": (
        {"==": [V, {"var": "language"}]},
        {"$.==": "'==' compares one field with values, found 2 fields"},
    ),
    "now as a condition": (
        {"and": [{"var": "now"}]},
        {"$.and[0].var": "'now' is not a condition: compare a timestamp field with it"},
    ),
    "a string as a condition": (
        {"or": ["yes"]},
        {"$.or[0]": "expected a condition, found a string"},
    ),
    "null as the rule": (
        None,
        {"$": "a segment rule cannot be null"},
    ),
    "a number as the rule": (
        1,
        {"$": "expected a condition, found a number"},
    ),
    "a list as the rule": (
        [True],
        {"$": "expected a condition, found a list"},
    ),
    "NaN in a Python rule": (
        {"==": [{"var": "custom_fields.x"}, float("nan")]},
        {"$.==[1]": "NaN and Infinity are not JSON numbers"},
    ),
    "Infinity in a Python rule": (
        {"<": [{"var": "created_at"}, float("inf")]},
        {"$.<[1]": "NaN and Infinity are not JSON numbers"},
    ),
    "an integer JavaScript cannot hold": (
        {"<": [{"var": "created_at"}, 2**53]},
        {"$.<[1]": "integers beyond ±(2**53 - 1) lose precision in JavaScript"},
    ),
    "a key that is not a string": (
        {"and": [{1: [True]}]},
        {"$.and[0]": "object keys must be strings, found a number"},
    ),
    "a value that is not JSON": (
        {"==": [{"var": "custom_fields.at"}, datetime.date(2026, 1, 1)]},
        {"$.==[1]": "a Python date is not JSON"},
    ),
    "a tuple is not a JSON array": (
        {"in": [V, ("MY",)]},
        {"$.in[1]": "a Python tuple is not JSON"},
    ),
    "NaN in JSON text": (
        '{"==": [{"var": "custom_fields.x"}, NaN]}',
        {"$": "the rule is not valid JSON: NaN is not a JSON number"},
    ),
    "duplicate keys in JSON text": (
        '{"var": "country", "var": "language"}',
        {"$": "the rule is not valid JSON: duplicate key 'var'"},
    ),
    "malformed JSON text": (
        '{"var": "country"',
        {"$": "the rule is not valid JSON: Expecting ',' delimiter: line 1 column 18 (char 17)"},
    ),
    "bytes that are not UTF-8": (
        b'{"var": "\xff"}',
        {"$": "the rule is not UTF-8 text"},
    ),
}


@pytest.mark.parametrize(("doc", "expected"), list(ERRORS.values()), ids=list(ERRORS))
def test_each_kind_of_error_has_its_message_at_its_path(doc: Any, expected: dict[str, str]) -> None:
    assert problems(doc) == expected


def test_every_problem_is_reported_not_only_the_first() -> None:
    doc = {
        "and": [
            {"==": [{"var": "contry"}, "MY"]},
            {"cat": ["a"]},
            {"<": [{"var": "tags"}, 1]},
            {"or": [{"==": [V, 1]}, {"!!": [{"var": "__class__"}]}]},
        ]
    }
    assert problems(doc) == {
        "$.and[0].==[0].var": "unknown field 'contry'",
        "$.and[1].cat": "'cat' is valid JSONLogic but not supported in segment rules: the SQL compiler cannot evaluate it",
        "$.and[2].<[0]": "'<' cannot be applied to 'tags' (string list)",
        "$.and[3].or[0].==[1]": "'country' (string) can be compared with a string or null, not a number",
        "$.and[3].or[1].!![0].var": "unknown field '__class__'",
    }


def test_two_problems_at_one_path_are_both_told() -> None:
    assert problems({"==": [{"var": ["country", 1]}, 2]}) == {
        "$.==[0].var[1]": "the default of 'country' must be a string, not a number",
        "$.==[1]": "'country' (string) can be compared with a string or null, not a number",
    }


# ----------------------------------------------------------------------------- hostile names


@pytest.mark.parametrize(
    "name",
    [
        "__class__",
        "a.__dict__",
        "country.__class__",
        "country.length",
        "tags.0",
        "custom_fields",
        "custom_fields.__class__",
        "custom_fields.__proto__",
        "custom_fields.constructor",
        "custom_fields.toString",
        "custom_fields.a.b",
        "custom_fields." + "k" * 65,
        "custom_fields.with-dash",
        "custom_fields.",
        "id",
    ],
)
def test_names_outside_the_catalog_are_unknown_fields(name: str) -> None:
    assert problems({"!!": [{"var": name}]}) == {"$.!![0].var": f"unknown field {name!r}"}


def test_custom_field_keys_may_be_up_to_64_word_characters() -> None:
    name = "custom_fields." + "K_9" * 21 + "x"
    assert validate_segment_rule({"!!": [{"var": name}]}) == {"!!": [{"var": name}]}


# ----------------------------------------------------------------------------- limits


def nested_negations(levels: int, inner: Any = V) -> dict[str, Any]:
    """``{"!": [{"!": [... inner ...]}]}``: each ``!`` adds two levels, an object and an array."""
    rule: dict[str, Any] = inner
    for _ in range(levels):
        rule = {"!": [rule]}
    return rule


MISSING = {"missing": ["country"]}  # two levels: an object and an array


def test_depth_32_is_accepted_and_33_is_not() -> None:
    at_limit = nested_negations(15, MISSING)  # 15 * 2 + 2
    assert validate_segment_rule(at_limit) == at_limit
    over = nested_negations(16)  # 16 * 2 + 1 (the var object)
    assert problems(over) == {"$": "the rule is nested too deeply: more than 32 levels of arrays and objects"}


def test_depth_is_checked_on_json_text_before_parsing() -> None:
    at_limit = nested_negations(15, MISSING)
    assert validate_segment_rule(json.dumps(at_limit)) == at_limit
    assert problems(json.dumps(nested_negations(16))) == {
        "$": "the rule is nested too deeply: more than 32 levels of arrays and objects"
    }


def test_the_limits_hold_for_the_canonical_form_too() -> None:
    shorthand = {"!": nested_negations(15)}  # 1 + 15 * 2 + 1 levels as given, one more once expanded
    assert problems(shorthand) == {
        "$": "the rule is nested too deeply: more than 32 levels of arrays and objects"
    }


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    text = json.dumps({"in": ["[[[[" * 20 + "{{{{" * 20, {"var": "email"}]})
    assert validate_segment_rule(text) == json.loads(text)


def test_2000_values_are_accepted_and_2001_are_not() -> None:
    # {"in": [{"var": "country"}, [...]]}: the object, its array, the var object, "country" and the
    # list are 5 values; the list's items make up the rest.
    at_limit = {"in": [V, ["MY"] * 1995]}
    assert validate_segment_rule(at_limit) == at_limit
    assert problems({"in": [V, ["MY"] * 1996]}) == {"$": "the rule is too large: more than 2000 JSON values"}


def test_64_kib_of_json_are_accepted_and_one_byte_more_is_not() -> None:
    # Compact, {"in":["<s>",{"var":"email"}]} is 27 bytes around the string.
    at_limit = {"in": ["x" * (65536 - 27), {"var": "email"}]}
    assert len(json.dumps(at_limit, separators=(",", ":"))) == 65536
    assert validate_segment_rule(at_limit) == at_limit
    over = {"in": ["x" * (65536 - 26), {"var": "email"}]}
    assert problems(over) == {"$": "the rule is too large: more than 65536 bytes of JSON"}
    assert problems(json.dumps(over, separators=(",", ":"))) == {
        "$": "the rule is too large: more than 65536 bytes of JSON"
    }


def test_the_size_limit_counts_utf8_bytes() -> None:
    rule = {"in": ["é" * 40_000, {"var": "email"}]}  # 40,000 characters, 80,000 bytes
    assert problems(rule) == {"$": "the rule is too large: more than 65536 bytes of JSON"}
    assert problems(json.dumps(rule, ensure_ascii=False)) == {
        "$": "the rule is too large: more than 65536 bytes of JSON"
    }


def rejected_quickly(doc: Any) -> dict[str, str]:
    started = time.perf_counter()
    messages = problems(doc)
    assert time.perf_counter() - started < 0.5
    return messages


TOO_DEEP = {"$": "the rule is nested too deeply: more than 32 levels of arrays and objects"}
TOO_LARGE = {"$": "the rule is too large: more than 65536 bytes of JSON"}


def test_a_100000_level_document_is_rejected_quickly_without_recursion() -> None:
    assert rejected_quickly(nested_negations(100_000)) == TOO_DEEP
    deep_list: list[Any] = []
    for _ in range(100_000):
        deep_list = [deep_list]
    assert rejected_quickly({"in": [V, deep_list]}) == TOO_DEEP


def test_a_100000_level_json_text_is_rejected_quickly() -> None:
    assert rejected_quickly('{"!": ' * 100_000 + "true" + "}" * 100_000) == TOO_LARGE
    # Under the size limit, but far deeper than json.loads could go without recursing.
    assert rejected_quickly("[" * 60_000 + "]" * 5_000) == TOO_DEEP


def test_a_10_mb_document_is_rejected_quickly() -> None:
    assert rejected_quickly({"in": ["x" * 10_000_000, {"var": "email"}]}) == TOO_LARGE
    assert rejected_quickly({"in": [V, ["MY"] * 1_000_000]}) == {
        "$": "the rule is too large: more than 2000 JSON values"
    }
    assert rejected_quickly({"in": [V, ["x" * 10_000] * 1000]}) == TOO_LARGE
    assert rejected_quickly(json.dumps({"in": [V, ["MY"] * 2_000_000]})) == TOO_LARGE


def test_a_self_containing_document_is_rejected() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert rejected_quickly({"in": [V, loop]}) == TOO_DEEP


# ----------------------------------------------------------------------------- the Marshmallow API


def test_rule_validation_errors_are_marshmallow_validation_errors() -> None:
    with pytest.raises(ValidationError):
        validate_segment_rule({"var": "contry"})


def test_the_schema_keys_errors_by_path_under_rule_and_refuses_unknown_keys() -> None:
    with pytest.raises(ValidationError) as caught:
        SegmentRuleSchema().load({"rule": {"!!": [{"var": "contry"}]}, "name": "x"})
    assert caught.value.messages == {
        "rule": {"$.!![0].var": "unknown field 'contry'"},
        "name": ["Unknown field."],
    }


def test_the_field_embeds_in_other_schemas_and_loads_the_canonical_form() -> None:
    class Segment(Schema):
        name = fields.String(required=True)
        rule = SegmentRule(required=True)

    assert Segment().load({"name": "VIP", "rule": '{"!!": {"var": "tags"}}'}) == {
        "name": "VIP",
        "rule": {"!!": [{"var": "tags"}]},
    }
    with pytest.raises(ValidationError) as caught:
        Segment().load({"name": "VIP", "rule": {"map": [[], True]}})
    assert caught.value.messages == {
        "rule": {
            "$.map": "'map' is valid JSONLogic but not supported in segment rules: the SQL compiler cannot evaluate it"
        }
    }
    assert Segment().dump({"name": "VIP", "rule": {"!!": [{"var": "tags"}]}}) == {
        "name": "VIP",
        "rule": {"!!": [{"var": "tags"}]},
    }

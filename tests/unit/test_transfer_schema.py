"""The export format (contact_segments.rules.transfer): what loads and how, every kind of bad input
with its message and JSON path, the size limit, the writer, and the shipped JSON Schema."""

from __future__ import annotations

import copy
import json
import time
from importlib import resources
from typing import Any

import pytest

from contact_segments.rules.transfer import (
    FORMAT,
    FORMAT_VERSION,
    MAX_EXPORT_BYTES,
    MAX_SEGMENTS,
    RULE_OPERATORS,
    ExportValidationError,
    check_export,
    dump_export,
    export_document,
    export_json_schema,
    export_json_schema_text,
    format_instant,
    load_export,
)
from contact_segments.rules.validation import validate_segment_rule

NOW = 1_780_000_000  # 2026-05-28T20:26:40Z

COUNTRY_KNOWN = {"!!": [{"var": "country"}]}
COUNTRY_KNOWN_CONDITIONS = {
    "op": "and",
    "conditions": [{"category": "contact_field", "field": "country", "operator": "exists", "value": None}],
}
COMPLEX = {
    "and": [
        {"===": [{"var": "country"}, "MY"]},
        {"or": [{"in": ["promotion", {"var": "tags"}]}, {"in": [{"var": "language"}, ["en", "ms"]]}]},
        {
            "and": [
                {"!!": [{"var": "last_incoming_message_at"}]},
                {"<": [{"var": "last_incoming_message_at"}, {"-": [{"var": "now"}, 2592000]}]},
            ]
        },
    ]
}
ADVANCED = {"if": [{"var": "email"}, True, False]}


def segment(name: str = "Country known", **overrides: Any) -> dict[str, Any]:
    item = {
        "name": name,
        "description": "",
        "rule": COUNTRY_KNOWN,
        "conditions": COUNTRY_KNOWN_CONDITIONS,
        "is_default": False,
    }
    return item | overrides


def export(*segments: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    document = export_document(
        workspace_id="acme",
        timezone="Asia/Kuala_Lumpur",
        exported_at=NOW,
        segments=list(segments) or [segment()],
    )
    return document | overrides


def problems(document: Any) -> dict[str, str]:
    loaded, found = check_export(document)
    assert loaded is None, "expected the document to be refused"
    assert found
    return found


def sample() -> dict[str, Any]:
    """An export as the exporter writes it: canonical rules, conditions where they fit."""
    from contact_segments.rules.conditions import rule_to_conditions

    items = []
    for index, rule in enumerate([COUNTRY_KNOWN, COMPLEX, ADVANCED, True]):
        canonical = validate_segment_rule(rule)
        conditions = rule_to_conditions(canonical)
        advanced = (
            len(conditions["conditions"]) == 1 and conditions["conditions"][0]["category"] == "advanced"
        )
        items.append(
            segment(
                f"Segment {index} — Café",
                description=f"description {index}",
                rule=canonical,
                conditions=None if advanced else conditions,
                is_default=index == 0,
            )
        )
    return export(*items)


# --------------------------------------------------------------------------- what loads


def test_a_valid_export_loads_normalised() -> None:
    document = export(
        segment("  Country known  ", rule={"!!": {"var": ["country"]}}, is_default=True),
        segment("VIP", rule={"in": ["vip", {"var": "tags"}]}, conditions=None, description="the best"),
    )
    loaded = load_export(document)
    assert loaded.format_version == FORMAT_VERSION
    assert loaded.workspace_id == "acme" and loaded.timezone == "Asia/Kuala_Lumpur"
    assert format_instant(loaded.exported_at.timestamp()) == "2026-05-28T20:26:40Z"
    first, second = loaded.segments
    assert (first.name, first.rule, first.is_default) == ("Country known", COUNTRY_KNOWN, True)
    assert first.conditions == COUNTRY_KNOWN_CONDITIONS
    # conditions: null still loads the conditions the rule reads as
    assert second.conditions["conditions"][0]["operator"] == "has_any_of"
    assert second.description == "the best"


@pytest.mark.parametrize("form", ["text", "bytes", "parsed"])
def test_text_bytes_and_parsed_documents_load_alike(form: str) -> None:
    document = sample()
    given = {"text": dump_export(document), "bytes": dump_export(document).encode(), "parsed": document}[form]
    assert load_export(given) == load_export(document)


def test_conditions_that_describe_the_rule_in_another_form_are_accepted() -> None:
    # A date instead of epoch seconds, a duration in hours instead of days: same meaning.
    rule = {
        "and": [
            {"!!": [{"var": "created_at"}]},
            {">": [{"var": "created_at"}, {"-": [{"var": "now"}, 172800]}]},
        ]
    }
    conditions = {
        "op": "and",
        "conditions": [
            {
                "category": "contact_field",
                "field": "created_at",
                "operator": "is_less_than_ago",
                "value": {"amount": 48, "unit": "hours"},
            }
        ],
    }
    loaded = load_export(export(segment(rule=rule, conditions=conditions)))
    assert loaded.segments[0].conditions["conditions"][0]["value"] == {"amount": 2, "unit": "days"}


def test_writer_is_deterministic_and_reads_back() -> None:
    document = sample()
    text = dump_export(document)
    shuffled = json.loads(json.dumps(document))
    shuffled = dict(reversed(list(shuffled.items())))
    assert dump_export(shuffled) == text
    assert text.endswith("}\n") and '\n  "exported_at": "2026-05-28T20:26:40Z",' in text
    assert "Café" in text  # UTF-8, not \u escapes
    assert load_export(text).segments == load_export(document).segments


def test_format_instant_is_whole_utc_seconds() -> None:
    assert format_instant(NOW + 0.999) == "2026-05-28T20:26:40Z"
    assert format_instant(0) == "1970-01-01T00:00:00Z"


# --------------------------------------------------------------------------- bad input, with paths


def test_not_json() -> None:
    assert problems("{not json") == {
        "$": "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    }
    assert problems(b"\xff\xfe{}")["$"].startswith("not JSON: not UTF-8 text")
    assert problems("")["$"].startswith("not JSON")
    assert problems('{"format": "x", "format": "y"}') == {"$": "not JSON: duplicate key 'format'"}
    assert "NaN" in problems('{"format": NaN}')["$"]
    assert "nested too deeply" in problems("[" * 100_000)["$"]


@pytest.mark.parametrize(
    ("document", "found"),
    [
        ([1, 2], "found a list"),
        ("just a string", "found a string"),
        (None, "found null"),
        (COUNTRY_KNOWN, 'found no "format"'),  # a bare rule
        ({"format": "something/else", "version": 1}, 'found "format": "something/else"'),
    ],
)
def test_json_that_is_not_an_export(document: Any, found: str) -> None:
    found_problems = problems(json.dumps(document))
    assert list(found_problems) == ["$"]
    assert "not" in found_problems["$"] and "export" in found_problems["$"]
    assert found in found_problems["$"]


def test_a_newer_format_version_is_refused_with_that_message_alone() -> None:
    document = export(format_version=FORMAT_VERSION + 1, new_field={"anything": True})
    document["segments"] = "something this version does not know"
    assert problems(document) == {
        "format_version": f"this export is format version {FORMAT_VERSION + 1}, newer than this contact-segments "
        f"understands (versions up to {FORMAT_VERSION}): upgrade contact-segments to read it"
    }


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (True, "expected a whole number"),
        ("1", "expected a whole number"),
        (1.5, "expected a whole number"),
        (0, "format versions start at 1"),
    ],
)
def test_bad_format_versions(version: Any, message: str) -> None:
    assert message in problems(export(format_version=version))["format_version"]


@pytest.mark.parametrize(
    ("remove", "path"),
    [
        (("format",), "format"),
        (("format_version",), "format_version"),
        (("exported_at",), "exported_at"),
        (("workspace",), "workspace"),
        (("segments",), "segments"),
        (("workspace", "id"), "workspace.id"),
        (("workspace", "timezone"), "workspace.timezone"),
        (("segments", 0, "name"), "segments[0].name"),
        (("segments", 0, "description"), "segments[0].description"),
        (("segments", 0, "rule"), "segments[0].rule"),
        (("segments", 0, "conditions"), "segments[0].conditions"),
        (("segments", 0, "is_default"), "segments[0].is_default"),
    ],
)
def test_a_missing_field_at_any_level(remove: tuple[Any, ...], path: str) -> None:
    document = export()
    parent: Any = document
    for step in remove[:-1]:
        parent = parent[step]
    del parent[remove[-1]]
    assert problems(document) == {path: "required field is missing"}


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ((), "extra"),
        (("workspace",), "workspace.extra"),
        (("segments", 0), "segments[0].extra"),
        (("segments", 0, "conditions"), "segments[0].conditions.extra"),
        (("segments", 0, "conditions", "conditions", 0), "segments[0].conditions.conditions[0].extra"),
    ],
)
def test_an_unknown_field_at_any_level(where: tuple[Any, ...], path: str) -> None:
    document = copy.deepcopy(export())
    parent: Any = document
    for step in where:
        parent = parent[step]
    parent["extra"] = 1
    found = problems(document)
    assert list(found) == [path]
    assert "nknown field" in found[path]


@pytest.mark.parametrize(
    ("rule", "path", "message"),
    [
        (
            {"and": [COUNTRY_KNOWN, {"==": [{"var": "contry"}, "MY"]}]},
            "segments[0].rule.and[1].==[0].var",
            "unknown field 'contry'",
        ),
        (
            {"and": [COUNTRY_KNOWN, {"regex": ["^a", {"var": "email"}]}]},
            "segments[0].rule.and[1].regex",
            "unknown operator 'regex'",
        ),
        (
            {"and": [COUNTRY_KNOWN, {"==": [{"var": "country"}, 3]}]},
            "segments[0].rule.and[1].==[1]",
            "can be compared with a string or null, not a number",
        ),
        (
            {"and": [COUNTRY_KNOWN, {">": [{"var": "created_at"}, "yesterday"]}]},
            "segments[0].rule.and[1].>[1]",
            "number",
        ),
        ("not a rule", "segments[0].rule", "not valid JSON"),
        (None, "segments[0].rule", "must not be null"),
        ({"cat": ["a", "b"]}, "segments[0].rule.cat", "not supported in segment rules"),
    ],
)
def test_an_invalid_rule_is_reported_below_the_rule_path(rule: Any, path: str, message: str) -> None:
    found = problems(export(segment(rule=rule, conditions=None)))
    assert path in found, found
    assert message in found[path]


def test_a_rule_too_deep_or_too_large() -> None:
    deep: Any = COUNTRY_KNOWN
    for _ in range(40):
        deep = {"!": [deep]}
    large = {"or": [{"===": [{"var": "email"}, f"person{i}@example.com"]} for i in range(3000)]}
    found = problems(
        export(segment("Deep", rule=deep, conditions=None), segment("Large", rule=large, conditions=None))
    )
    assert found == {
        "segments[0].rule": "the rule is nested too deeply: more than 32 levels of arrays and objects",
        "segments[1].rule": "the rule is too large: more than 2000 JSON values",
    }


def test_wrong_types_in_the_envelope_and_segments() -> None:
    document = export(
        segment(name=7, description=None, conditions=[1], is_default="yes"),
        format=1,
        exported_at="yesterday",
        workspace=["acme"],
    )
    assert problems(document) == {
        "format": "expected a string",
        "exported_at": "expected an RFC 3339 date-time, e.g. 2026-01-31T09:30:00Z",
        "workspace": "expected a JSON object",
        "segments[0].name": "expected a string",
        "segments[0].description": "must not be null",
        "segments[0].conditions": 'expected a condition group ({"op": "and", "conditions": [...]}) or null',
        "segments[0].is_default": "expected true or false",
    }


def test_bad_values_in_the_envelope() -> None:
    document = export(format="contact-segments/exports", exported_at="2026-01-31T09:30:00")
    document["workspace"] = {"id": "", "timezone": "Mars/Olympus_Mons"}
    assert problems(document) == {
        "format": "expected 'contact-segments/export'",
        "exported_at": "expected a date-time with a zone offset, e.g. 2026-01-31T09:30:00Z",
        "workspace.id": "a workspace id has 1 to 255 characters",
        "workspace.timezone": "unknown time zone 'Mars/Olympus_Mons' (use an IANA name, e.g. Asia/Kuala_Lumpur)",
    }


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("   ", "a segment name must not be empty"),
        ("x" * 101, "a segment name has at most 100 characters, this one 101"),
        ("two\nlines", "a segment name must not contain control characters, line breaks or lone surrogates"),
        ("bell\x07", "a segment name must not contain control characters, line breaks or lone surrogates"),
    ],
)
def test_bad_names(name: str, message: str) -> None:
    assert problems(export(segment(name))) == {"segments[0].name": message}


def test_duplicate_names_in_one_file_trimmed_and_case_folded() -> None:
    document = export(
        segment("VIP"), segment("Country"), segment("  vip "), segment("STRASSE"), segment("straße")
    )
    assert problems(document) == {
        "segments[2].name": "duplicate name 'vip': segments[0] has the same name "
        "(names are compared trimmed and case-insensitively)",
        "segments[4].name": "duplicate name 'straße': segments[3] has the same name "
        "(names are compared trimmed and case-insensitively)",
    }


def test_an_empty_segment_list() -> None:
    assert problems(export(segments=[])) == {
        "segments": "an export holds at least one segment, this one none"
    }


def test_more_than_500_segments_is_refused_without_checking_each() -> None:
    items = [segment(f"S{i}", rule={"nonsense": i}) for i in range(MAX_SEGMENTS + 1)]
    started = time.perf_counter()
    found = problems(export(*items))
    assert time.perf_counter() - started < 0.5
    assert found == {"segments": "an export holds at most 500 segments (a workspace's limit), this one 501"}


def test_exactly_500_segments_load() -> None:
    items = [segment(f"S{i}") for i in range(MAX_SEGMENTS)]
    assert len(load_export(export(*items)).segments) == MAX_SEGMENTS


def test_segments_that_are_not_a_list_or_not_objects() -> None:
    assert problems(export(segments={"a": 1})) == {"segments": "expected a list of segments, found an object"}
    assert problems(export(segments=[segment(), "VIP"])) == {"segments[1]": "expected a JSON object"}


def test_conditions_that_do_not_describe_the_rule() -> None:
    conditions = copy.deepcopy(COUNTRY_KNOWN_CONDITIONS)
    conditions["conditions"][0]["field"] = "language"
    found = problems(export(segment(conditions=conditions)))
    assert list(found) == ["segments[0].conditions"]
    assert found["segments[0].conditions"].startswith(
        'the conditions do not describe the rule (they mean {"!!": [{"var": "language"}]})'
    )


def test_invalid_conditions_are_reported_by_path_even_next_to_an_invalid_rule() -> None:
    conditions = {
        "op": "and",
        "conditions": [
            {"category": "contact_field", "field": "country", "operator": "is_after", "value": None}
        ],
    }
    found = problems(export(segment(rule={"nope": 1}, conditions=conditions)))
    assert "segments[0].rule.nope" in found
    assert "segments[0].conditions.conditions[0].operator" in found


def test_conditions_nested_too_deeply() -> None:
    conditions: Any = COUNTRY_KNOWN_CONDITIONS
    for _ in range(40):
        conditions = {"op": "and", "conditions": [conditions]}
    found = problems(export(segment(conditions=conditions)))
    assert found == {
        "segments[0].conditions": "the condition group is nested too deeply: more than 32 levels of arrays and objects"
    }


def test_every_problem_at_once_in_document_order() -> None:
    items = [segment(f"S{i}") for i in range(12)]
    items[10]["rule"] = {"nope": 1}
    items[2]["extra"] = True
    items[11]["name"] = "s2"
    document = export(*items, exported_at=None)
    document["workspace"]["timezone"] = "Nowhere/Else"
    found = problems(document)
    assert list(found) == [
        "exported_at",
        "workspace.timezone",
        "segments[2].extra",
        "segments[10].rule.nope",
        "segments[11].name",
    ]
    with pytest.raises(ExportValidationError) as caught:
        load_export(document)
    assert caught.value.messages == found


# --------------------------------------------------------------------------- size


def test_a_50_mb_file_is_refused_by_its_size_before_parsing() -> None:
    data = b" " * (50 * 1024 * 1024)
    started = time.perf_counter()
    found = problems(data)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.1, elapsed
    assert found == {
        "$": "the file is too large: 52,428,800 bytes, more than the 16 MiB (16,777,216 bytes) an export may have"
    }


def test_the_size_limit_counts_utf8_bytes() -> None:
    assert MAX_EXPORT_BYTES == 16 * 1024 * 1024
    text = "é" * (MAX_EXPORT_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
    assert "too large" in problems(text)["$"]


# --------------------------------------------------------------------------- the JSON Schema


def shipped_schema() -> str:
    return resources.files("contact_segments.fixtures").joinpath("export.schema.json").read_text("utf-8")


def test_the_shipped_json_schema_is_the_generated_one() -> None:
    assert shipped_schema() == export_json_schema_text(), (
        "regenerate: python -m contact_segments.rules.transfer > contact_segments/fixtures/export.schema.json"
    )


@pytest.fixture
def jsonschema() -> Any:
    """The jsonschema package (in the test extra): tests that use it check the shipped schema as
    another tool would."""
    return pytest.importorskip("jsonschema")


def test_the_json_schema_is_a_valid_draft_2020_12_schema(jsonschema: Any) -> None:
    schema = json.loads(shipped_schema())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["format"]["const"] == FORMAT
    assert schema["properties"]["segments"]["maxItems"] == MAX_SEGMENTS
    assert set(schema["$defs"]["operation"]["propertyNames"]["enum"]) == set(RULE_OPERATORS)


@pytest.fixture
def validator(jsonschema: Any) -> Any:
    return jsonschema.Draft202012Validator(json.loads(shipped_schema()))


def test_sample_exports_validate_against_the_json_schema(validator: Any) -> None:
    for document in (sample(), export(), json.loads(dump_export(sample()))):
        assert load_export(document)
        errors = list(validator.iter_errors(json.loads(dump_export(document))))
        assert not errors, [error.message for error in errors]


def test_the_default_segments_validate_against_the_json_schema(validator: Any) -> None:
    registry = json.loads(
        resources.files("contact_segments.fixtures").joinpath("default_segments.json").read_text()
    )
    items = [
        segment(item["name"], rule=item["rule"], conditions=item["conditions"], is_default=True)
        for item in registry["segments"]
    ]
    document = export(*items)
    assert len(load_export(document).segments) == 5
    assert not list(validator.iter_errors(document))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("exported_at"),
        lambda d: d.update(extra=1),
        lambda d: d["workspace"].update(extra=1),
        lambda d: d["segments"][0].update(extra=1),
        lambda d: d["segments"][0].pop("conditions"),
        lambda d: d["segments"][0].update(rule={"a": 1, "b": 2}),
        lambda d: d["segments"][0].update(rule={"regex": ["a"]}),
        lambda d: d["segments"][0].update(is_default="yes"),
        lambda d: d.update(format_version=2),
        lambda d: d.update(segments=[]),
        lambda d: d["segments"][0]["conditions"]["conditions"][0].update(operator="is_after"),
    ],
)
def test_structural_problems_fail_both_checks(mutate: Any, validator: Any) -> None:
    document = copy.deepcopy(export())
    mutate(document)
    assert list(validator.iter_errors(document))
    assert check_export(document)[0] is None


def test_schema_generation_is_stable() -> None:
    assert export_json_schema() == export_json_schema()
    assert export_json_schema_text() == export_json_schema_text()


def test_odd_unknown_keys_are_echoed_escaped_and_short() -> None:
    document = export()
    document["x" * 10_000] = 1
    document["segments"][0]["\x1b[31mred"] = 2
    found = problems(document)
    assert found == {
        "$['" + "x" * 40 + "…]": "unknown field",
        "segments[0]['\\x1b[31mred']": "unknown field",
    }


def test_many_unknown_fields_are_one_problem_each_few_then_a_count() -> None:
    document = export()
    document["segments"][0] |= {f"f{i}": i for i in range(100_000)}
    document["workspace"] |= {f"w{i}": i for i in range(20)}
    found = problems(document)
    assert [path for path in found if path.startswith("workspace.")] == [f"workspace.w{i}" for i in range(10)]
    assert found["workspace"] == "10 more unknown fields"
    assert [path for path in found if path.startswith("segments[0].")] == [
        f"segments[0].f{i}" for i in range(10)
    ]
    assert found["segments[0]"] == "99,990 more unknown fields"


def test_at_most_100_problems_are_listed_then_how_many_more() -> None:
    items = [segment(f"S{i}", rule={"nope": i}, conditions=None) for i in range(150)]
    found = problems(export(*items))
    assert len(found) == 101
    assert list(found)[:3] == ["segments[0].rule.nope", "segments[1].rule.nope", "segments[2].rule.nope"]
    assert list(found.items())[-1] == ("…", "and 50 more problems")

"""The five default segments and the example rules shipped in ``fixtures/``, checked against hand-picked
contacts: exactly at the 7-day and 30-day boundaries, one second either side, and with null fields."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from contact_segments.rules import apply
from contact_segments.rules.conditions import conditions_to_rule, filter_count, rule_to_conditions
from contact_segments.rules.jsvalues import truthy
from contact_segments.rules.validation import validate_segment_rule
from tests.support.views import contact_view

FIXTURES = resources.files("contact_segments") / "fixtures"
REGISTRY = json.loads((FIXTURES / "default_segments.json").read_text("utf-8"))
DEFAULTS = {segment["key"]: segment for segment in REGISTRY["segments"]}
EXAMPLES = sorted((FIXTURES / "examples").iterdir(), key=lambda path: path.name)

NOW = 1_770_000_000  # 2026-02-02T02:40:00Z
DAY = 86_400

NULL_CONTACT: dict[str, Any] = contact_view(now=NOW, id="c-null")


def contact(**fields: Any) -> dict[str, Any]:
    return NULL_CONTACT | fields


def member(key: str, data: dict[str, Any]) -> bool:
    return truthy(apply(DEFAULTS[key]["rule"], data))


def test_the_registry_holds_the_five_defaults_with_their_exact_names() -> None:
    assert REGISTRY["version"] == 1
    assert [(segment["key"], segment["name"]) for segment in REGISTRY["segments"]] == [
        ("created_last_7_days", "Contacts created <7 days ago"),
        ("inactive_30_days", "Contacts inactive >30 days"),
        ("with_tags", "Contacts with tags"),
        ("country_known", "Country known"),
        ("language_known", "Language known"),
    ]
    assert {segment["added_in"] for segment in REGISTRY["segments"]} == {1}


@pytest.mark.parametrize("key", list(DEFAULTS))
def test_each_default_is_a_canonical_segment_rule_and_its_conditions_say_the_same(key: str) -> None:
    segment = DEFAULTS[key]
    assert validate_segment_rule(segment["rule"]) == segment["rule"]
    assert conditions_to_rule(segment["conditions"], "Asia/Kuala_Lumpur") == segment["rule"]
    assert rule_to_conditions(segment["rule"]) == segment["conditions"]
    assert filter_count(segment["rule"]) == 1


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        (NOW, True),
        (NOW - 7 * DAY + 1, True),  # one second short of 7 days old
        (NOW - 7 * DAY, False),  # exactly 7 days old: not less than 7 days
        (NOW - 7 * DAY - 1, False),
        (NOW - 365 * DAY, False),
        (None, False),
    ],
)
def test_created_less_than_7_days_ago(created_at: int | None, expected: bool) -> None:
    assert member("created_last_7_days", contact(created_at=created_at)) is expected


@pytest.mark.parametrize(
    ("last_incoming_message_at", "expected"),
    [
        (NOW, False),
        (NOW - 30 * DAY + 1, False),
        (NOW - 30 * DAY, False),  # exactly 30 days: not more than 30 days
        (NOW - 30 * DAY - 1, True),  # one second more
        (NOW - 400 * DAY, True),
        (None, False),  # never wrote: not inactive
    ],
)
def test_inactive_for_more_than_30_days(last_incoming_message_at: int | None, expected: bool) -> None:
    data = contact(created_at=NOW - 500 * DAY, last_incoming_message_at=last_incoming_message_at)
    assert member("inactive_30_days", data) is expected


def test_inactivity_reads_incoming_messages_only() -> None:
    data = contact(last_incoming_message_at=NOW - 60 * DAY, last_outgoing_message_at=NOW)
    assert member("inactive_30_days", data) is True
    data = contact(last_incoming_message_at=None, last_outgoing_message_at=NOW - 60 * DAY)
    assert member("inactive_30_days", data) is False


@pytest.mark.parametrize(
    ("tags", "expected"),
    [([], False), (None, False), (["vip"], True), (["a", "b"], True), ([""], True)],
)
def test_contacts_with_tags(tags: list[str] | None, expected: bool) -> None:
    assert member("with_tags", contact(tags=tags)) is expected


@pytest.mark.parametrize(("key", "field"), [("country_known", "country"), ("language_known", "language")])
@pytest.mark.parametrize(("value", "expected"), [("MY", True), ("ms", True), ("", False), (None, False)])
def test_country_and_language_known(key: str, field: str, value: str | None, expected: bool) -> None:
    assert member(key, contact(**{field: value})) is expected


def test_a_contact_with_null_fields_is_in_no_default_segment() -> None:
    assert [key for key in DEFAULTS if member(key, NULL_CONTACT)] == []


def test_a_contact_with_every_field_is_in_each_default_it_should_be() -> None:
    data = contact(
        country="MY",
        language="ms",
        tags=["vip"],
        created_at=NOW - DAY,
        last_incoming_message_at=NOW - 31 * DAY,
    )
    assert [key for key in DEFAULTS if member(key, data)] == list(DEFAULTS)


def test_the_defaults_are_evaluated_at_the_given_instant() -> None:
    data = contact(created_at=NOW - DAY, last_incoming_message_at=NOW - DAY)
    assert member("created_last_7_days", data) is True
    assert member("inactive_30_days", data) is False
    later = data | {"now": NOW + 30 * DAY}
    assert member("created_last_7_days", later) is False
    assert member("inactive_30_days", later) is True


# ----------------------------------------------------------------------------- examples


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_each_example_rule_is_valid_and_matches_its_cases(path: Any) -> None:
    example = json.loads(path.read_text("utf-8"))
    rule = validate_segment_rule(example["rule"])
    assert rule == example["rule"]
    assert example["cases"]
    for case in example["cases"]:
        data = contact(**case["contact"]) | {"now": case.get("now", NOW)}
        assert truthy(apply(rule, data)) is case["matches"], case
    # Read back through the editor, the rule keeps its meaning.
    rewritten = conditions_to_rule(rule_to_conditions(rule), "UTC")
    for case in example["cases"]:
        data = contact(**case["contact"]) | {"now": case.get("now", NOW)}
        assert truthy(apply(rewritten, data)) is case["matches"], case

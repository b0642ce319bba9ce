"""The editor's conditions: the JSONLogic each condition becomes, the round trip in both directions,
the product meaning of empty fields, the advanced fallback, the filter badge and input errors."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contact_segments.rules import apply
from contact_segments.rules.conditions import (
    ConditionsValidationError,
    conditions_to_rule,
    filter_count,
    load_conditions,
    rule_to_conditions,
)
from contact_segments.rules.jsvalues import truthy
from contact_segments.rules.validation import validate_segment_rule
from tests.support.views import contact_view

TZ = "Asia/Kuala_Lumpur"
NOW = 1_770_000_000
DAY = 86_400

IMPLIED = {
    "contact_tag": "tags",
    "lifecycle": "lifecycle",
    "channel": "channels",
    "last_interacted_channel": "last_interacted_channel",
    "last_incoming_message": "last_incoming_message_at",
    "last_outgoing_message": "last_outgoing_message_at",
}


def cond(category: str, operator: str, value: Any = None, field: str | None = None) -> dict[str, Any]:
    """A condition in canonical form."""
    return {
        "category": category,
        "field": field or IMPLIED.get(category),
        "operator": operator,
        "value": value,
    }


def advanced(rule: Any) -> dict[str, Any]:
    return {"category": "advanced", "field": None, "operator": "jsonlogic", "value": rule}


def group(op: str, *members: dict[str, Any]) -> dict[str, Any]:
    return {"op": op, "conditions": list(members)}


def var(name: str) -> dict[str, str]:
    return {"var": name}


def ago(seconds: int) -> dict[str, Any]:
    return {"-": [var("now"), seconds]}


def exists(name: str) -> dict[str, Any]:
    return {"!!": [var(name)]}


def custom_exists(name: str) -> dict[str, Any]:
    return {"!": [{"missing": [name]}]}


COUNTRY, EMAIL, CREATED = var("country"), var("email"), var("created_at")
SCORE, VIP, PLAN = var("custom_fields.score"), var("custom_fields.vip"), var("custom_fields.plan")
TAGS, CHANNELS, LIFECYCLE = var("tags"), var("channels"), var("lifecycle")
LAST_CHANNEL, INCOMING, OUTGOING = (
    var("last_interacted_channel"),
    var("last_incoming_message_at"),
    var("last_outgoing_message_at"),
)
JAN_31_KL = 1_769_788_800  # 2026-01-31T00:00:00+08:00
FEB_28_KL = JAN_31_KL + 28 * DAY

# (id, canonical condition, the rule it alone becomes): every operator of every category.
ENCODINGS = [
    # contact fields: strings
    ("string is_equal_to", cond("contact_field", "is_equal_to", "MY", "country"), {"===": [COUNTRY, "MY"]}),
    (
        "string is_not_equal_to",
        cond("contact_field", "is_not_equal_to", "MY", "country"),
        {"!==": [COUNTRY, "MY"]},
    ),
    (
        "string contains",
        cond("contact_field", "contains", "@acme.com", "email"),
        {"in": ["@acme.com", EMAIL]},
    ),
    (
        "string does_not_contain",
        cond("contact_field", "does_not_contain", "@acme.com", "email"),
        {"!": [{"in": ["@acme.com", EMAIL]}]},
    ),
    ("string exists", cond("contact_field", "exists", None, "country"), {"!!": [COUNTRY]}),
    ("string does_not_exist", cond("contact_field", "does_not_exist", None, "country"), {"!": [COUNTRY]}),
    (
        "string has_any_of",
        cond("contact_field", "has_any_of", ["MY", "SG"], "country"),
        {"in": [COUNTRY, ["MY", "SG"]]},
    ),
    (
        "string has_none_of",
        cond("contact_field", "has_none_of", ["MY"], "country"),
        {"!": [{"in": [COUNTRY, ["MY"]]}]},
    ),
    # contact fields: custom
    (
        "custom is_equal_to",
        cond("contact_field", "is_equal_to", True, "custom_fields.vip"),
        {"===": [VIP, True]},
    ),
    (
        "custom is_not_equal_to",
        cond("contact_field", "is_not_equal_to", 0, "custom_fields.score"),
        {"!==": [SCORE, 0]},
    ),
    (
        "custom contains",
        cond("contact_field", "contains", "old", "custom_fields.plan"),
        {"in": ["old", PLAN]},
    ),
    (
        "custom does_not_contain",
        cond("contact_field", "does_not_contain", "old", "custom_fields.plan"),
        {"!": [{"in": ["old", PLAN]}]},
    ),
    (
        "custom exists",
        cond("contact_field", "exists", None, "custom_fields.vip"),
        custom_exists("custom_fields.vip"),
    ),
    (
        "custom does_not_exist",
        cond("contact_field", "does_not_exist", None, "custom_fields.vip"),
        {"missing": ["custom_fields.vip"]},
    ),
    (
        "custom is_greater_than",
        cond("contact_field", "is_greater_than", 10, "custom_fields.score"),
        {"and": [custom_exists("custom_fields.score"), {">": [SCORE, 10]}]},
    ),
    (
        "custom is_less_than",
        cond("contact_field", "is_less_than", 2.5, "custom_fields.score"),
        {"and": [custom_exists("custom_fields.score"), {"<": [SCORE, 2.5]}]},
    ),
    (
        "custom is_between",
        cond("contact_field", "is_between", {"from": -1, "to": 5}, "custom_fields.score"),
        {"and": [custom_exists("custom_fields.score"), {"<=": [-1, SCORE, 5]}]},
    ),
    (
        "custom has_any_of",
        cond("contact_field", "has_any_of", [1, "gold", False], "custom_fields.plan"),
        {"in": [PLAN, [1, "gold", False]]},
    ),
    (
        "custom has_none_of",
        cond("contact_field", "has_none_of", ["gold"], "custom_fields.plan"),
        {"!": [{"in": [PLAN, ["gold"]]}]},
    ),
    # contact fields: created_at
    ("created exists", cond("contact_field", "exists", None, "created_at"), exists("created_at")),
    ("created does_not_exist", cond("contact_field", "does_not_exist", None, "created_at"), {"!": [CREATED]}),
    (
        "created is_timestamp_after",
        cond("contact_field", "is_timestamp_after", JAN_31_KL, "created_at"),
        {"and": [exists("created_at"), {">": [CREATED, JAN_31_KL]}]},
    ),
    (
        "created is_timestamp_before",
        cond("contact_field", "is_timestamp_before", JAN_31_KL, "created_at"),
        {"and": [exists("created_at"), {"<": [CREATED, JAN_31_KL]}]},
    ),
    (
        "created is_timestamp_between",
        cond("contact_field", "is_timestamp_between", {"from": JAN_31_KL, "to": FEB_28_KL}, "created_at"),
        {"and": [exists("created_at"), {"<=": [JAN_31_KL, CREATED, FEB_28_KL]}]},
    ),
    (
        "created is_more_than_ago",
        cond("contact_field", "is_more_than_ago", {"amount": 90, "unit": "minutes"}, "created_at"),
        {"and": [exists("created_at"), {"<": [CREATED, ago(5400)]}]},
    ),
    (
        "created is_less_than_ago",
        cond("contact_field", "is_less_than_ago", {"amount": 7, "unit": "days"}, "created_at"),
        {"and": [exists("created_at"), {">": [CREATED, ago(604_800)]}]},
    ),
    # tags and channels
    ("tag has_any_of one", cond("contact_tag", "has_any_of", ["vip"]), {"or": [{"in": ["vip", TAGS]}]}),
    (
        "tag has_any_of",
        cond("contact_tag", "has_any_of", ["vip", "promotion"]),
        {"or": [{"in": ["vip", TAGS]}, {"in": ["promotion", TAGS]}]},
    ),
    ("tag has_all_of one", cond("contact_tag", "has_all_of", ["vip"]), {"and": [{"in": ["vip", TAGS]}]}),
    (
        "tag has_all_of",
        cond("contact_tag", "has_all_of", ["vip", "promotion"]),
        {"and": [{"in": ["vip", TAGS]}, {"in": ["promotion", TAGS]}]},
    ),
    (
        "tag has_none_of",
        cond("contact_tag", "has_none_of", ["vip", "spam"]),
        {"!": [{"or": [{"in": ["vip", TAGS]}, {"in": ["spam", TAGS]}]}]},
    ),
    ("tag exists", cond("contact_tag", "exists"), exists("tags")),
    ("tag does_not_exist", cond("contact_tag", "does_not_exist"), {"!": [TAGS]}),
    (
        "channel has_any_of",
        cond("channel", "has_any_of", ["whatsapp"]),
        {"or": [{"in": ["whatsapp", CHANNELS]}]},
    ),
    (
        "channel has_all_of",
        cond("channel", "has_all_of", ["whatsapp", "line"]),
        {"and": [{"in": ["whatsapp", CHANNELS]}, {"in": ["line", CHANNELS]}]},
    ),
    (
        "channel has_none_of",
        cond("channel", "has_none_of", ["sms"]),
        {"!": [{"or": [{"in": ["sms", CHANNELS]}]}]},
    ),
    ("channel exists", cond("channel", "exists"), exists("channels")),
    ("channel does_not_exist", cond("channel", "does_not_exist"), {"!": [CHANNELS]}),
    # lifecycle and last interacted channel: string fields of their own
    ("lifecycle is_equal_to", cond("lifecycle", "is_equal_to", "customer"), {"===": [LIFECYCLE, "customer"]}),
    ("lifecycle is_not_equal_to", cond("lifecycle", "is_not_equal_to", "lead"), {"!==": [LIFECYCLE, "lead"]}),
    ("lifecycle contains", cond("lifecycle", "contains", "cust"), {"in": ["cust", LIFECYCLE]}),
    (
        "lifecycle does_not_contain",
        cond("lifecycle", "does_not_contain", "x"),
        {"!": [{"in": ["x", LIFECYCLE]}]},
    ),
    ("lifecycle exists", cond("lifecycle", "exists"), exists("lifecycle")),
    ("lifecycle does_not_exist", cond("lifecycle", "does_not_exist"), {"!": [LIFECYCLE]}),
    (
        "lifecycle has_any_of",
        cond("lifecycle", "has_any_of", ["lead", "customer"]),
        {"in": [LIFECYCLE, ["lead", "customer"]]},
    ),
    (
        "lifecycle has_none_of",
        cond("lifecycle", "has_none_of", ["lead"]),
        {"!": [{"in": [LIFECYCLE, ["lead"]]}]},
    ),
    (
        "last channel is_equal_to",
        cond("last_interacted_channel", "is_equal_to", "whatsapp"),
        {"===": [LAST_CHANNEL, "whatsapp"]},
    ),
    (
        "last channel has_any_of",
        cond("last_interacted_channel", "has_any_of", ["line", "sms"]),
        {"in": [LAST_CHANNEL, ["line", "sms"]]},
    ),
    ("last channel does_not_exist", cond("last_interacted_channel", "does_not_exist"), {"!": [LAST_CHANNEL]}),
    # time since the last message
    (
        "incoming is_more_than_ago",
        cond("last_incoming_message", "is_more_than_ago", {"amount": 30, "unit": "days"}),
        {"and": [exists("last_incoming_message_at"), {"<": [INCOMING, ago(2_592_000)]}]},
    ),
    (
        "incoming is_less_than_ago",
        cond("last_incoming_message", "is_less_than_ago", {"amount": 12, "unit": "hours"}),
        {"and": [exists("last_incoming_message_at"), {">": [INCOMING, ago(43_200)]}]},
    ),
    (
        "incoming is_timestamp_after",
        cond("last_incoming_message", "is_timestamp_after", FEB_28_KL),
        {"and": [exists("last_incoming_message_at"), {">": [INCOMING, FEB_28_KL]}]},
    ),
    ("incoming exists", cond("last_incoming_message", "exists"), exists("last_incoming_message_at")),
    (
        "outgoing is_more_than_ago",
        cond("last_outgoing_message", "is_more_than_ago", {"amount": 25, "unit": "hours"}),
        {"and": [exists("last_outgoing_message_at"), {"<": [OUTGOING, ago(90_000)]}]},
    ),
    (
        "outgoing is_timestamp_before",
        cond("last_outgoing_message", "is_timestamp_before", -86_400),
        {"and": [exists("last_outgoing_message_at"), {"<": [OUTGOING, -86_400]}]},
    ),
    (
        "outgoing is_timestamp_between",
        cond("last_outgoing_message", "is_timestamp_between", {"from": 0, "to": 0}),
        {"and": [exists("last_outgoing_message_at"), {"<=": [0, OUTGOING, 0]}]},
    ),
    ("outgoing does_not_exist", cond("last_outgoing_message", "does_not_exist"), {"!": [OUTGOING]}),
    # advanced
    (
        "advanced",
        advanced({"==": [var("custom_fields.score"), "1"]}),
        {"==": [var("custom_fields.score"), "1"]},
    ),
]
OTHER = cond("contact_tag", "exists")
OTHER_RULE = exists("tags")


@pytest.mark.parametrize(
    ("condition", "rule"), [case[1:] for case in ENCODINGS], ids=[case[0] for case in ENCODINGS]
)
def test_each_condition_becomes_its_rule_and_reads_back(condition: dict[str, Any], rule: Any) -> None:
    alone = group("and", condition)
    assert conditions_to_rule(alone, TZ) == rule
    assert rule_to_conditions(rule) == alone
    assert validate_segment_rule(rule) == rule

    within = group("or", condition, group("and", OTHER, condition))
    within_rule = {"or": [rule, {"and": [OTHER_RULE, rule]}]}
    assert conditions_to_rule(within, TZ) == within_rule
    assert rule_to_conditions(within_rule) == within


def test_every_category_and_operator_is_covered() -> None:
    categories = {case[1]["category"] for case in ENCODINGS}
    operators = {case[1]["operator"] for case in ENCODINGS}
    assert categories == set(IMPLIED) | {"contact_field", "advanced"}
    assert operators == {
        "is_equal_to",
        "is_not_equal_to",
        "contains",
        "does_not_contain",
        "exists",
        "does_not_exist",
        "is_greater_than",
        "is_less_than",
        "is_between",
        "is_timestamp_after",
        "is_timestamp_before",
        "is_timestamp_between",
        "has_any_of",
        "has_all_of",
        "has_none_of",
        "is_more_than_ago",
        "is_less_than_ago",
        "jsonlogic",
    }


def test_groups_nest_and_an_empty_group_matches_everyone() -> None:
    assert conditions_to_rule(group("and"), TZ) is True
    assert conditions_to_rule(group("or"), TZ) is True
    assert rule_to_conditions(True) == group("and")
    nested = group(
        "or", group("and", OTHER, cond("lifecycle", "exists")), cond("contact_field", "exists", None, "email")
    )
    rule = {"or": [{"and": [OTHER_RULE, exists("lifecycle")]}, exists("email")]}
    assert conditions_to_rule(nested, TZ) == rule
    assert rule_to_conditions(rule) == nested
    lone_group = group("and", group("or", OTHER, cond("lifecycle", "exists")))
    assert conditions_to_rule(lone_group, TZ) == {"and": [{"or": [OTHER_RULE, exists("lifecycle")]}]}
    assert rule_to_conditions({"and": [{"or": [OTHER_RULE, exists("lifecycle")]}]}) == lone_group


# ----------------------------------------------------------------------------- input forms


def only(condition: dict[str, Any]) -> dict[str, Any]:
    return group("and", condition)


@pytest.mark.parametrize(
    ("value", "tz", "epoch"),
    [
        ("2026-01-31", "Asia/Kuala_Lumpur", 1_769_788_800),  # local midnight, UTC+8
        ("2026-01-31", "UTC", 1_769_817_600),
        ("2026-07-04", "America/New_York", 1_783_137_600),  # summer time, UTC-4
        ("2026-01-04", "America/New_York", 1_767_502_800),  # winter time, UTC-5
        ("2026-01-31T09:30:00+02:00", "Asia/Kuala_Lumpur", 1_769_844_600),  # the offset wins
        ("2026-01-31T09:30:00Z", "America/New_York", 1_769_851_800),
        ("2026-01-31T09:30:00", "Asia/Kuala_Lumpur", 1_769_823_000),  # no offset: local time
        (1_769_788_800, "America/New_York", 1_769_788_800),
    ],
)
def test_timestamps_given_as_dates_are_local_midnight_in_the_workspace_time_zone(
    value: Any, tz: str, epoch: int
) -> None:
    condition = {
        "category": "contact_field",
        "field": "created_at",
        "operator": "is_timestamp_after",
        "value": value,
    }
    rule = conditions_to_rule(only(condition), tz)
    assert rule == {"and": [exists("created_at"), {">": [CREATED, epoch]}]}
    assert rule_to_conditions(rule) == only(cond("contact_field", "is_timestamp_after", epoch, "created_at"))


def test_a_timestamp_range_is_resolved_then_checked() -> None:
    condition = cond(
        "last_incoming_message",
        "is_timestamp_between",
        {"from": "2026-01-31", "to": "2026-01-30T23:59:59+08:00"},
    )
    with pytest.raises(ConditionsValidationError) as caught:
        conditions_to_rule(only(condition), TZ)
    assert caught.value.messages == {
        "conditions": {0: {"value": {"_schema": ["'from' must not be after 'to'"]}}}
    }
    condition["value"]["to"] = "2026-01-31T00:00:00+08:00"
    assert conditions_to_rule(only(condition), TZ) == {
        "and": [exists("last_incoming_message_at"), {"<=": [JAN_31_KL, INCOMING, JAN_31_KL]}]
    }


@pytest.mark.parametrize(
    ("given_value", "canonical", "seconds"),
    [
        ({"amount": 48, "unit": "hours"}, {"amount": 2, "unit": "days"}, 172_800),
        ({"amount": 1440, "unit": "minutes"}, {"amount": 1, "unit": "days"}, 86_400),
        ({"amount": 120, "unit": "minutes"}, {"amount": 2, "unit": "hours"}, 7_200),
        ({"amount": 90, "unit": "minutes"}, {"amount": 90, "unit": "minutes"}, 5_400),
        ({"amount": 25, "unit": "hours"}, {"amount": 25, "unit": "hours"}, 90_000),
    ],
)
def test_durations_read_back_in_the_largest_exact_unit(
    given_value: Any, canonical: Any, seconds: int
) -> None:
    condition = cond("last_outgoing_message", "is_less_than_ago", given_value)
    rule = conditions_to_rule(only(condition), TZ)
    assert rule == {"and": [exists("last_outgoing_message_at"), {">": [OUTGOING, ago(seconds)]}]}
    assert rule_to_conditions(rule) == only(cond("last_outgoing_message", "is_less_than_ago", canonical))
    assert load_conditions(only(condition), TZ) == rule_to_conditions(rule)


def test_fixed_categories_may_omit_their_field_and_exists_its_value() -> None:
    given = group(
        "and",
        {"category": "contact_tag", "operator": "exists"},
        {
            "category": "last_incoming_message",
            "operator": "is_more_than_ago",
            "value": {"amount": 30, "unit": "days"},
        },
    )
    assert load_conditions(given, TZ) == group(
        "and",
        cond("contact_tag", "exists"),
        cond("last_incoming_message", "is_more_than_ago", {"amount": 30, "unit": "days"}),
    )


# ----------------------------------------------------------------------------- product meaning


def contact(**fields: Any) -> dict[str, Any]:
    return contact_view(now=NOW, **fields)


def matches(condition: dict[str, Any], data: dict[str, Any]) -> bool:
    rule = conditions_to_rule(only(condition), TZ)
    return truthy(apply(rule, data))


INACTIVE = cond("last_incoming_message", "is_more_than_ago", {"amount": 30, "unit": "days"})


def test_inactive_for_more_than_30_days_never_matches_a_contact_that_never_wrote() -> None:
    assert not matches(INACTIVE, contact(last_incoming_message_at=None))
    assert matches(INACTIVE, contact(last_incoming_message_at=NOW - 31 * DAY))
    assert not matches(INACTIVE, contact(last_incoming_message_at=NOW - 30 * DAY))
    # Plain JavaScript would have let the null through: null < now - 30 days.
    assert apply({"<": [INCOMING, ago(30 * DAY)]}, contact()) is True


@pytest.mark.parametrize(
    ("condition", "data", "expected"),
    [
        # negative operators are complements: they match empty fields
        (cond("contact_field", "is_not_equal_to", "MY", "country"), contact(), True),
        (cond("contact_field", "is_not_equal_to", "MY", "country"), contact(country="MY"), False),
        (cond("contact_field", "does_not_contain", "@acme", "email"), contact(), True),
        (cond("contact_tag", "has_none_of", ["vip"]), contact(), True),
        (cond("contact_tag", "has_none_of", ["vip"]), contact(tags=["vip"]), False),
        (cond("lifecycle", "has_none_of", ["lead"]), contact(), True),
        (cond("contact_field", "does_not_exist", None, "country"), contact(country=""), True),
        (cond("contact_field", "is_not_equal_to", 5, "custom_fields.score"), contact(), True),
        # positive operators never match empty fields
        (cond("contact_field", "is_less_than", 5, "custom_fields.score"), contact(), False),
        (
            cond("contact_field", "is_less_than", 5, "custom_fields.score"),
            contact(custom_fields={"score": ""}),
            False,
        ),
        (
            cond("contact_field", "is_less_than", 5, "custom_fields.score"),
            contact(custom_fields={"score": None}),
            False,
        ),
        (
            cond("contact_field", "is_less_than", 5, "custom_fields.score"),
            contact(custom_fields={"score": 0}),
            True,
        ),
        (
            cond("contact_field", "is_between", {"from": 0, "to": 5}, "custom_fields.score"),
            contact(custom_fields={}),
            False,
        ),
        (
            cond("contact_field", "is_between", {"from": 0, "to": 5}, "custom_fields.score"),
            contact(custom_fields={"score": "5"}),
            True,
        ),
        (cond("contact_field", "is_timestamp_before", JAN_31_KL, "created_at"), contact(), False),
        (cond("contact_field", "is_timestamp_after", -DAY, "created_at"), contact(), False),
        (cond("contact_tag", "has_any_of", ["vip"]), contact(), False),
        # custom fields exist when they hold 0 or false, not when they are absent, null or ""
        (
            cond("contact_field", "exists", None, "custom_fields.vip"),
            contact(custom_fields={"vip": False}),
            True,
        ),
        (cond("contact_field", "exists", None, "custom_fields.vip"), contact(custom_fields={"vip": 0}), True),
        (
            cond("contact_field", "exists", None, "custom_fields.vip"),
            contact(custom_fields={"vip": ""}),
            False,
        ),
        (
            cond("contact_field", "exists", None, "custom_fields.vip"),
            contact(custom_fields={"vip": None}),
            False,
        ),
        (cond("contact_field", "exists", None, "custom_fields.vip"), contact(), False),
        # equality is strict
        (
            cond("contact_field", "is_equal_to", 5, "custom_fields.score"),
            contact(custom_fields={"score": "5"}),
            False,
        ),
        (
            cond("contact_field", "is_equal_to", 5, "custom_fields.score"),
            contact(custom_fields={"score": 5.0}),
            True,
        ),
        (
            cond("contact_field", "is_equal_to", True, "custom_fields.vip"),
            contact(custom_fields={"vip": 1}),
            False,
        ),
        # "ago" boundaries are strict
        (
            cond("contact_field", "is_less_than_ago", {"amount": 7, "unit": "days"}, "created_at"),
            contact(created_at=NOW - 7 * DAY),
            False,
        ),
        (
            cond("contact_field", "is_less_than_ago", {"amount": 7, "unit": "days"}, "created_at"),
            contact(created_at=NOW - 7 * DAY + 1),
            True,
        ),
    ],
)
def test_what_conditions_mean_for_empty_and_boundary_values(
    condition: Any, data: Any, expected: bool
) -> None:
    assert matches(condition, data) is expected


# ----------------------------------------------------------------------------- rules that are not conditions


SAMPLE_CONTACTS = [
    contact(),
    contact(country="MY", tags=["promotion"], lifecycle="lead"),
    contact(
        country="SG", tags=["vip", "spam"], lifecycle="customer", last_incoming_message_at=NOW - 40 * DAY
    ),
    contact(country="", tags=["gold"], lifecycle="", last_incoming_message_at=NOW - 30 * DAY),
]

OPAQUE_RULES = [
    {"==": [var("custom_fields.score"), 1]},
    {">": [CREATED, ago(604_800)]},  # unguarded
    {"if": [TAGS, EMAIL, False]},
    {"missing_some": [1, ["phone", "email"]]},
    {"var": "country"},
    {"!=": [var("custom_fields.plan"), "gold"]},
    {"===": [COUNTRY, None]},
    {"!": [{"!": [COUNTRY]}]},
    {"!!": [var("custom_fields.vip")]},
    {"in": [COUNTRY, ["MY", None]]},
    {"in": ["", EMAIL]},
    False,
]


@pytest.mark.parametrize("rule", OPAQUE_RULES, ids=str)
def test_a_rule_that_fits_no_condition_reads_back_as_one_advanced_condition(rule: Any) -> None:
    assert rule_to_conditions(rule) == only(advanced(rule))
    assert conditions_to_rule(rule_to_conditions(rule), TZ) == rule
    assert filter_count(rule) == 1


def test_groups_keep_their_conditions_and_wrap_only_the_parts_that_do_not_fit() -> None:
    rule = {"or": [{"in": ["vip", TAGS]}, {"in": ["line", CHANNELS]}, {"==": [SCORE, 1]}, {"!!": [COUNTRY]}]}
    assert rule_to_conditions(rule) == group(
        "or",
        cond("contact_tag", "has_any_of", ["vip"]),
        cond("channel", "has_any_of", ["line"]),
        advanced({"==": [SCORE, 1]}),
        cond("contact_field", "exists", None, "country"),
    )
    assert filter_count(rule) == 4
    # A guard on another field, or a timestamp that is not whole seconds, is no condition.
    assert rule_to_conditions({"and": [exists("email"), {">": [CREATED, 5]}]}) == group(
        "and", cond("contact_field", "exists", None, "email"), advanced({">": [CREATED, 5]})
    )
    assert rule_to_conditions({"and": [exists("created_at"), {"<": [CREATED, 1.5]}]}) == group(
        "and", cond("contact_field", "exists", None, "created_at"), advanced({"<": [CREATED, 1.5]})
    )


def test_an_advanced_rule_that_spells_out_a_condition_beside_its_guard_reads_back_as_that_condition() -> None:
    """The one documented exception to the round trip: the meaning is kept, the shape is not."""
    shaped = group(
        "and", cond("contact_field", "exists", None, "created_at"), advanced({">": [CREATED, ago(DAY)]})
    )
    rule = conditions_to_rule(shaped, TZ)
    assert rule_to_conditions(rule) == only(
        cond("contact_field", "is_less_than_ago", {"amount": 1, "unit": "days"}, "created_at")
    )


SHORTHANDS = [
    (
        {"and": [{"==": [COUNTRY, "MY"]}, {"in": ["promotion", TAGS]}]},
        group(
            "and",
            cond("contact_field", "is_equal_to", "MY", "country"),
            cond("contact_tag", "has_any_of", ["promotion"]),
        ),
    ),
    ({"!=": [LIFECYCLE, "lead"]}, only(cond("lifecycle", "is_not_equal_to", "lead"))),
    ({"!": [{"in": ["spam", TAGS]}]}, only(cond("contact_tag", "has_none_of", ["spam"]))),
    (
        {"or": [{"in": ["vip", TAGS]}, {"in": ["gold", TAGS]}]},
        only(cond("contact_tag", "has_any_of", ["vip", "gold"])),
    ),
    (
        {"and": [{"!!": [INCOMING]}, {"<": [INCOMING, ago(2_592_000)]}]},
        only(cond("last_incoming_message", "is_more_than_ago", {"amount": 30, "unit": "days"})),
    ),
]


@pytest.mark.parametrize(("rule", "conditions"), SHORTHANDS, ids=str)
def test_common_handwritten_forms_read_as_conditions_with_the_same_meaning(
    rule: Any, conditions: Any
) -> None:
    assert rule_to_conditions(rule) == conditions
    rewritten = conditions_to_rule(conditions, TZ)
    for data in SAMPLE_CONTACTS:
        assert apply(rewritten, data) == apply(rule, data)


@pytest.mark.parametrize(
    ("rule", "count"),
    [
        (True, 0),
        (exists("tags"), 1),
        (
            {
                "and": [
                    exists("tags"),
                    {"or": [exists("country"), {"and": [exists("email"), {"==": [SCORE, 1]}]}]},
                ]
            },
            4,
        ),
        ({"and": [exists("last_incoming_message_at"), {"<": [INCOMING, ago(2_592_000)]}]}, 1),
        ({"or": [{"in": ["a", TAGS]}, {"in": ["b", TAGS]}, {"in": ["c", TAGS]}]}, 1),
    ],
)
def test_filter_count_is_the_number_of_conditions(rule: Any, count: int) -> None:
    assert filter_count(rule) == count


# ----------------------------------------------------------------------------- input errors


def load_errors(doc: Any, tz: str = TZ) -> Any:
    with pytest.raises(ConditionsValidationError) as caught:
        load_conditions(doc, tz)
    return caught.value.messages


@pytest.mark.parametrize(
    ("members", "messages"),
    [
        (
            [{"category": "contact_field", "field": "contry", "operator": "exists"}],
            {0: {"field": ["unknown field 'contry'"]}},
        ),
        (
            [{"category": "contact_field", "operator": "exists"}],
            {0: {"field": ["a contact field condition names its field"]}},
        ),
        (
            [{"category": "contact_field", "field": "tags", "operator": "exists"}],
            {0: {"field": ["'tags' has a category of its own: 'contact_tag'"]}},
        ),
        (
            [{"category": "contact_tag", "field": "channels", "operator": "exists"}],
            {0: {"field": ["the 'contact_tag' category is about 'tags'"]}},
        ),
        (
            [{"category": "contact_field", "field": "country", "operator": "is_greater_than", "value": 3}],
            {0: {"operator": ["'is_greater_than' does not apply to 'country' (string)"]}},
        ),
        (
            [{"category": "contact_tag", "operator": "is_equal_to", "value": "vip"}],
            {0: {"operator": ["'is_equal_to' does not apply to 'tags' (string list)"]}},
        ),
        (
            [{"category": "contact_tag", "operator": "has_any_of", "value": []}],
            {0: {"value": ["Shorter than minimum length 1."]}},
        ),
        (
            [{"category": "contact_field", "field": "country", "operator": "is_equal_to", "value": 60}],
            {0: {"value": ["Not a valid string."]}},
        ),
        (
            [
                {
                    "category": "contact_field",
                    "field": "custom_fields.score",
                    "operator": "is_less_than",
                    "value": True,
                }
            ],
            {0: {"value": ["expected a number"]}},
        ),
        (
            [
                {
                    "category": "contact_field",
                    "field": "custom_fields.x",
                    "operator": "is_equal_to",
                    "value": None,
                }
            ],
            {0: {"value": ["Field may not be null."]}},
        ),
        (
            [{"category": "contact_tag", "operator": "exists", "value": "vip"}],
            {0: {"value": ["this operator takes no value: use null"]}},
        ),
        (
            [
                {
                    "category": "contact_field",
                    "field": "custom_fields.score",
                    "operator": "is_between",
                    "value": {"from": 5, "to": 1},
                }
            ],
            {0: {"value": {"_schema": ["'from' must not be after 'to'"]}}},
        ),
        (
            [
                {
                    "category": "last_incoming_message",
                    "operator": "is_more_than_ago",
                    "value": {"amount": 0, "unit": "weeks"},
                }
            ],
            {
                0: {
                    "value": {
                        "amount": ["Must be greater than or equal to 1 and less than or equal to 1000000."],
                        "unit": ["Must be one of: days, hours, minutes."],
                    }
                }
            },
        ),
        (
            [
                {
                    "category": "contact_field",
                    "field": "created_at",
                    "operator": "is_timestamp_after",
                    "value": "31/01/2026",
                }
            ],
            {0: {"value": ["expected epoch seconds, a date (YYYY-MM-DD) or an ISO 8601 datetime"]}},
        ),
        (
            [
                {
                    "category": "contact_field",
                    "field": "created_at",
                    "operator": "is_timestamp_after",
                    "value": "2026-01-31T00:00:00.5Z",
                }
            ],
            {0: {"value": ["timestamps are whole seconds"]}},
        ),
        (
            [{"category": "advanced", "operator": "jsonlogic", "value": {"cat": ["a"]}}],
            {
                0: {
                    "value": {
                        "$.cat": "'cat' is valid JSONLogic but not supported in segment rules: the SQL compiler cannot evaluate it"
                    }
                }
            },
        ),
        (
            [{"category": "advanced", "field": "tags", "operator": "exists", "value": True}],
            {
                0: {
                    "field": ["an advanced condition has no field"],
                    "operator": ["an advanced condition's operator is 'jsonlogic'"],
                }
            },
        ),
        (
            [{"category": "contact_tag", "operator": "exists", "colour": "red"}],
            {0: {"colour": ["Unknown field."]}},
        ),
        (
            [{"op": "or", "conditions": []}],
            {0: {"conditions": ["a nested group needs at least one condition"]}},
        ),
        (
            [{"op": "xor", "conditions": [{"category": "contact_tag", "operator": "exists"}]}],
            {0: {"op": ["Must be one of: and, or."]}},
        ),
        (
            ["country"],
            {0: ["expected a condition (with a 'category') or a group (with 'op' and 'conditions')"]},
        ),
    ],
)
def test_invalid_conditions_are_reported_where_they_are(members: list[Any], messages: dict[int, Any]) -> None:
    assert load_errors(group("and", *members)) == {"conditions": messages}


def test_an_unknown_time_zone_is_reported() -> None:
    assert load_errors(group("and"), "Mars/Olympus_Mons") == {"tz": ["unknown time zone 'Mars/Olympus_Mons'"]}


def test_deeply_nested_conditions_are_rejected_before_loading() -> None:
    deep: dict[str, Any] = cond("contact_tag", "exists")
    for _ in range(100_000):
        deep = group("and", deep)
    assert load_errors(deep) == {
        "_schema": ["the condition group is nested too deeply: more than 32 levels of arrays and objects"]
    }


def test_conditions_too_large_for_a_rule_are_reported_as_such() -> None:
    deep: dict[str, Any] = INACTIVE
    for _ in range(13):  # each group adds two levels to the rule, and one to a condition's value
        deep = group("and", deep, OTHER)
    with pytest.raises(ConditionsValidationError) as caught:
        conditions_to_rule(deep, TZ)
    assert caught.value.messages == {
        "rule": {"$": "the rule is nested too deeply: more than 32 levels of arrays and objects"}
    }


# ----------------------------------------------------------------------------- properties

STRINGS = st.sampled_from(["MY", "SG", "vip", "gold", "@acme.com", "line", "lead", "12"])
#: Custom values, with pairs that are loosely but not strictly equal ("12" and 12, 1 and true).
CUSTOM_SCALARS = ["12", 12, "1", 1, True, 0, False, "gold", "@acme.com", 2.5]
CUSTOM_VALUES = st.sampled_from(CUSTOM_SCALARS)
TIMESTAMPS = st.integers(NOW - 60 * DAY, NOW)
NUMBERS = st.sampled_from([-0.5, 0, 1, 2.5, 12, 20])
STRING_FIELDS = ["country", "email", "first_name", "phone", "language", "assignee", "conversation_status"]
CUSTOM_FIELDS = ["custom_fields.score", "custom_fields.vip", "custom_fields.plan"]
DURATIONS = st.one_of(
    st.builds(lambda n: {"amount": n, "unit": "days"}, st.integers(1, 90)),
    st.builds(lambda n: {"amount": n, "unit": "hours"}, st.integers(1, 2000).filter(lambda n: n % 24)),
    st.builds(lambda n: {"amount": n, "unit": "minutes"}, st.integers(1, 90_000).filter(lambda n: n % 60)),
)


def ranges(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(values, values).map(lambda pair: {"from": min(pair), "to": max(pair)})


def lists(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(values, min_size=1, max_size=3)


TEXT_OPERATORS = {
    "is_equal_to": None,
    "is_not_equal_to": None,
    "contains": STRINGS,
    "does_not_contain": STRINGS,
    "exists": st.none(),
    "does_not_exist": st.none(),
    "has_any_of": "list",
    "has_none_of": "list",
}


def text_condition(
    category: str, field: str | None, scalar: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    def values(operator: str) -> st.SearchStrategy[Any]:
        kind = TEXT_OPERATORS[operator]
        return scalar if kind is None else lists(scalar) if kind == "list" else kind

    return st.sampled_from(sorted(TEXT_OPERATORS)).flatmap(
        lambda operator: values(operator).map(lambda value: cond(category, operator, value, field))
    )


def one_of_operators(
    category: str, field: str | None, operators: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.sampled_from(sorted(operators)).flatmap(
        lambda operator: operators[operator].map(lambda value: cond(category, operator, value, field))
    )


TIMESTAMP_OPERATORS = {
    "exists": st.none(),
    "does_not_exist": st.none(),
    "is_timestamp_after": TIMESTAMPS,
    "is_timestamp_before": TIMESTAMPS,
    "is_timestamp_between": ranges(TIMESTAMPS),
    "is_more_than_ago": DURATIONS,
    "is_less_than_ago": DURATIONS,
}
LIST_OPERATORS = {
    "has_any_of": lists(STRINGS),
    "has_all_of": lists(STRINGS),
    "has_none_of": lists(STRINGS),
    "exists": st.none(),
    "does_not_exist": st.none(),
}
#: Advanced rules that read back as themselves, alone or beside any condition.
ADVANCED_RULES = [
    {"==": [SCORE, 1]},
    {"var": "country"},
    {"if": [TAGS, EMAIL, False]},
    {"missing_some": [1, ["phone", "email"]]},
    {"!=": [PLAN, "gold"]},
    False,
]

CONDITIONS = st.one_of(
    st.sampled_from(STRING_FIELDS).flatmap(lambda field: text_condition("contact_field", field, STRINGS)),
    st.deferred(lambda: CUSTOM_CONDITIONS),
    one_of_operators("contact_field", "created_at", TIMESTAMP_OPERATORS),
    one_of_operators("contact_tag", None, LIST_OPERATORS),
    one_of_operators("channel", None, LIST_OPERATORS),
    text_condition("lifecycle", None, STRINGS),
    text_condition("last_interacted_channel", None, STRINGS),
    one_of_operators("last_incoming_message", None, TIMESTAMP_OPERATORS),
    one_of_operators("last_outgoing_message", None, TIMESTAMP_OPERATORS),
    st.sampled_from(ADVANCED_RULES).map(advanced),
)


def groups(members: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda op, items: group(op, *items),
        st.sampled_from(["and", "or"]),
        st.lists(members, min_size=1, max_size=4),
    )


NESTED = st.recursive(CONDITIONS, groups, max_leaves=12)
ROOTS = st.one_of(st.just(group("and")), groups(NESTED))


@settings(max_examples=300, deadline=None)
@given(ROOTS)
def test_conditions_read_back_from_their_rule_unchanged(conditions: dict[str, Any]) -> None:
    rule = conditions_to_rule(conditions, TZ)
    assert validate_segment_rule(rule) == rule
    assert rule_to_conditions(rule) == conditions
    assert conditions_to_rule(rule_to_conditions(rule), TZ) == rule
    assert filter_count(rule) == count_conditions(conditions)


def count_conditions(item: dict[str, Any]) -> int:
    return sum(map(count_conditions, item["conditions"])) if "op" in item else 1


# The meaning of conditions, written independently of JSONLogic.


def js_number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
        return float(value)
    return math.nan


def strictly_equal(left: Any, right: Any) -> bool:
    return (
        isinstance(left, bool) == isinstance(right, bool)
        and isinstance(left, str) == isinstance(right, str)
        and left == right
    )


def holds(item: dict[str, Any], data: dict[str, Any]) -> bool:
    if "op" in item:
        results = [holds(member, data) for member in item["conditions"]]
        return all(results) if item["op"] == "and" else any(results)
    operator, name, value = item["operator"], item["field"], item["value"]
    if operator == "jsonlogic":
        return truthy(apply(value, data))
    field = (
        data["custom_fields"].get(name.split(".", 1)[1]) if name.startswith("custom_fields.") else data[name]
    )
    empty = field is None or field == "" or field == []
    now = data["now"]
    match operator:
        case "is_equal_to":
            return strictly_equal(field, value)
        case "is_not_equal_to":
            return not strictly_equal(field, value)
        case "contains":
            return isinstance(field, str) and value in field
        case "does_not_contain":
            return not (isinstance(field, str) and value in field)
        case "exists":
            return not empty
        case "does_not_exist":
            return empty
        case "has_any_of" | "has_none_of":
            if isinstance(field, list):
                found = any(item in field for item in value)
            else:
                found = any(strictly_equal(field, item) for item in value)
            return found == (operator == "has_any_of")
        case "has_all_of":
            return all(item in field for item in value)
        case "is_greater_than" | "is_timestamp_after":
            return not empty and js_number(field) > value
        case "is_less_than" | "is_timestamp_before":
            return not empty and js_number(field) < value
        case "is_between" | "is_timestamp_between":
            return not empty and value["from"] <= js_number(field) <= value["to"]
        case "is_more_than_ago" | "is_less_than_ago":
            seconds = value["amount"] * {"days": DAY, "hours": 3600, "minutes": 60}[value["unit"]]
            return not empty and (
                field < now - seconds if operator == "is_more_than_ago" else field > now - seconds
            )
    raise AssertionError(operator)


CONTACTS = st.builds(
    contact,
    country=st.sampled_from([None, "", "MY", "SG"]),
    email=st.sampled_from([None, "", "ana@acme.com", "bob@example.com"]),
    first_name=st.sampled_from([None, "vip", "Ana"]),
    lifecycle=st.sampled_from([None, "", "lead", "customer"]),
    last_interacted_channel=st.sampled_from([None, "line", "whatsapp"]),
    tags=st.lists(st.sampled_from(["vip", "gold", "lead"]), max_size=3, unique=True),
    channels=st.lists(st.sampled_from(["line", "whatsapp"]), max_size=2, unique=True),
    created_at=st.one_of(st.none(), TIMESTAMPS),
    last_incoming_message_at=st.one_of(st.none(), TIMESTAMPS),
    last_outgoing_message_at=st.one_of(st.none(), TIMESTAMPS),
    custom_fields=st.dictionaries(
        st.sampled_from(["score", "vip", "plan"]),
        st.sampled_from([None, "", *CUSTOM_SCALARS]),
        min_size=1,
        max_size=3,
    ),
)


@settings(max_examples=500, deadline=None)
@given(ROOTS, CONTACTS)
def test_a_rule_from_conditions_means_what_the_conditions_say(
    conditions: dict[str, Any], data: dict[str, Any]
) -> None:
    rule = conditions_to_rule(conditions, TZ)
    assert truthy(apply(rule, data)) is holds(conditions, data)


CUSTOM_CONDITIONS = st.sampled_from(CUSTOM_FIELDS).flatmap(
    lambda field: st.one_of(
        text_condition("contact_field", field, CUSTOM_VALUES),
        one_of_operators(
            "contact_field",
            field,
            {"is_greater_than": NUMBERS, "is_less_than": NUMBERS, "is_between": ranges(NUMBERS)},
        ),
    )
)


@settings(max_examples=1000, deadline=None)
@given(CUSTOM_CONDITIONS, CONTACTS)
def test_each_custom_field_condition_means_what_it_says(
    condition: dict[str, Any], data: dict[str, Any]
) -> None:
    """Custom fields get a test of their own: their mixed types are where JavaScript surprises."""
    assert matches(condition, data) is holds(condition, data)

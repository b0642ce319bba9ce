"""Rule analysis: the fields a rule reads, whether it reads the clock, and its time thresholds, whose
windows must hold exactly the contacts whose membership time can flip."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contact_segments.rules import apply
from contact_segments.rules.analysis import (
    FieldWindow,
    TimeThreshold,
    depends_on_now,
    fields_read,
    time_thresholds,
)

NOW = {"var": "now"}
CREATED = {"var": "created_at"}
WEEK = 604_800


def ago(seconds: int) -> dict[str, Any]:
    return {"-": [NOW, seconds]}


INACTIVE = {
    "and": [
        {"!!": [{"var": "last_incoming_message_at"}]},
        {"<": [{"var": "last_incoming_message_at"}, ago(2_592_000)]},
    ]
}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (True, set()),
        ({"!!": [{"var": "tags"}]}, {"tags"}),
        (INACTIVE, {"last_incoming_message_at"}),
        (
            {"and": [{"==": [{"var": "country"}, "MY"]}, {"in": ["promotion", {"var": "tags"}]}]},
            {"country", "tags"},
        ),
        ({"missing": ["language", "custom_fields.vip"]}, {"language", "custom_fields.vip"}),
        ({"missing_some": [1, ["phone", "email"]]}, {"phone", "email"}),
        ({"==": [{"var": ["language", "en"]}, "ms"]}, {"language"}),
        ({"<": [ago(60), CREATED, {"+": [NOW, 60]}]}, {"created_at"}),
        (
            {
                "if": [
                    {"var": "lifecycle"},
                    {"in": [{"var": "assignee"}, ["ana"]]},
                    {"!": [{"var": "channels"}]},
                ]
            },
            {"lifecycle", "assignee", "channels"},
        ),
    ],
)
def test_fields_read_names_every_catalog_field_and_never_now(rule: Any, expected: set[str]) -> None:
    assert fields_read(rule) == frozenset(expected)


def test_fields_read_accepts_the_shorthand_forms_too() -> None:
    assert fields_read({"!!": {"var": ["country"]}}) == {"country"}
    assert fields_read({"missing": [["country", "tags"]]}) == {"country", "tags"}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (True, False),
        ({"!!": [{"var": "created_at"}]}, False),
        ({">": [CREATED, 1_700_000_000]}, False),
        ({">": [CREATED, ago(WEEK)]}, True),
        ({"or": [{"!!": [{"var": "tags"}]}, {"<": [CREATED, NOW]}]}, True),
        ({"!": [{"<=": [ago(1), CREATED, {"+": [NOW, 1]}]}]}, True),
    ],
)
def test_depends_on_now(rule: Any, expected: bool) -> None:
    assert depends_on_now(rule) is expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"!!": [{"var": "tags"}]}, set()),
        ({">": [CREATED, 1_700_000_000]}, set()),
        ({">": [CREATED, ago(WEEK)]}, {TimeThreshold("created_at", -WEEK, ">")}),
        (INACTIVE, {TimeThreshold("last_incoming_message_at", -2_592_000, "<")}),
        ({"<": [ago(WEEK), CREATED]}, {TimeThreshold("created_at", -WEEK, ">")}),
        ({">=": [NOW, CREATED]}, {TimeThreshold("created_at", 0, "<=")}),
        ({"<=": [CREATED, {"+": [NOW, 30]}]}, {TimeThreshold("created_at", 30, "<=")}),
        (
            {"<": [ago(WEEK), CREATED, ago(60)]},
            {TimeThreshold("created_at", -WEEK, ">"), TimeThreshold("created_at", -60, "<")},
        ),
        (
            {"<=": [0, CREATED, ago(60)]},
            {TimeThreshold("created_at", -60, "<=")},
        ),
        (
            {"or": [{">": [CREATED, ago(WEEK)]}, {"!": [{">": [CREATED, ago(WEEK)]}]}]},
            {TimeThreshold("created_at", -WEEK, ">")},
        ),
    ],
)
def test_time_thresholds_read_each_comparison_as_field_op_now_plus_offset(
    rule: Any, expected: set[TimeThreshold]
) -> None:
    assert time_thresholds(rule) == frozenset(expected)


def test_created_less_than_7_days_ago_gives_created_at_and_minus_a_week() -> None:
    (threshold,) = time_thresholds({">": [CREATED, ago(WEEK)]})
    assert (threshold.field, threshold.offset) == ("created_at", -WEEK)


def test_the_window_of_created_less_than_7_days_ago() -> None:
    (threshold,) = time_thresholds({">": [CREATED, ago(WEEK)]})
    # Between 1,000,000 and 1,000,060 a contact leaves when it turns 7 days old: created after
    # 1,000,000 - WEEK (it was still in at t0) and at most 1,000,060 - WEEK (it is out at t1).
    window = threshold.window(1_000_000, 1_000_060)
    assert window == FieldWindow("created_at", 1_000_000 - WEEK, 1_000_060 - WEEK, low_inclusive=False)
    assert not window.contains(1_000_000 - WEEK)
    assert window.contains(1_000_000 - WEEK + 1)
    assert window.contains(1_000_060 - WEEK)
    assert not window.contains(1_000_060 - WEEK + 1)
    assert not window.contains(None)


COMPARISONS = ["<", "<=", ">", ">="]


@given(
    op=st.sampled_from(COMPARISONS),
    field_first=st.booleans(),
    sign=st.sampled_from(["+", "-"]),
    amount=st.integers(0, 100),
    t0=st.integers(-50, 250),
    step=st.integers(0, 50),
    value=st.one_of(st.none(), st.integers(-300, 500)),
)
def test_a_window_holds_exactly_the_values_whose_comparison_flips(
    op: str, field_first: bool, sign: str, amount: int, t0: int, step: int, value: int | None
) -> None:
    """The evaluator is the oracle: the comparison differs between t0 and t1 iff the value is in the window."""
    now_side = {sign: [NOW, amount]} if amount else NOW
    rule = {op: [CREATED, now_side] if field_first else [now_side, CREATED]}
    (threshold,) = time_thresholds(rule)
    t1 = t0 + step
    flips = apply(rule, {"created_at": value, "now": t0}) != apply(rule, {"created_at": value, "now": t1})
    assert threshold.window(t0, t1).contains(value) is flips


@given(
    low=st.integers(-100, 100),
    high=st.integers(-100, 100),
    t0=st.integers(-100, 300),
    step=st.integers(0, 60),
    value=st.integers(-300, 400),
)
def test_a_between_flips_only_inside_the_union_of_its_windows(
    low: int, high: int, t0: int, step: int, value: int
) -> None:
    rule = {"<=": [{"-": [NOW, low]}, CREATED, {"+": [NOW, high]}]}
    t1 = t0 + step
    flips = apply(rule, {"created_at": value, "now": t0}) != apply(rule, {"created_at": value, "now": t1})
    windows = [threshold.window(t0, t1) for threshold in time_thresholds(rule)]
    if flips:
        assert any(window.contains(value) for window in windows)

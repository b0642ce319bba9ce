"""Property test: our JSONLogic evaluation means what json-logic-js 2.0.5 means.

Hypothesis generates rules over every classic operator and a handful of data documents per rule;
json-logic-js (run by node, tests/oracle/oracle.js) evaluates the whole batch in one round trip, and
``apply`` must give the same value for each document, or raise where the reference throws.

The default run is ``ORACLE_EXAMPLES`` rules (a few seconds); ask for more with, for example,
``SEGMENTS_ORACLE_EXAMPLES=20000 pytest tests/unit/test_rules_oracle.py``. ``EDGE_CASES`` pins
corners that random rules seldom reach.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contact_segments.rules import apply
from tests.support.jsoracle import JsOracle, JsResult, normalise, require_oracle, same_value, to_json
from tests.support.strategies import data_objects, operations

ORACLE_EXAMPLES = 500

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def oracle() -> Iterator[JsOracle]:
    with require_oracle() as js:
        yield js


def evaluate(rule: Any, data: Any) -> JsResult:
    """Our answer in the oracle's terms: the normalised value, or the exception it raised."""
    try:
        return JsResult(value=normalise(apply(rule, data)))
    except Exception as exc:  # where json-logic-js throws, any exception will do
        return JsResult(error=f"{type(exc).__name__}: {exc}")


def agrees(ours: JsResult, reference: JsResult) -> bool:
    if reference.raised:
        return ours.raised
    return not ours.raised and same_value(ours.value, reference.value)


def show(result: JsResult) -> str:
    return f"raised {result.error}" if result.raised else to_json(result.value)


def assert_agrees(oracle: JsOracle, rule: Any, documents: list[Any]) -> None:
    """Evaluate ``rule`` on each document here and in json-logic-js (one round trip), and compare."""
    references = oracle.evaluate([(rule, data) for data in documents])
    for data, reference in zip(documents, references, strict=True):
        ours = evaluate(rule, data)
        assert agrees(ours, reference), (
            "apply differs from json-logic-js 2.0.5\n"
            f"  rule:      {to_json(rule)}\n"
            f"  data:      {to_json(data)}\n"
            f"  ours:      {show(ours)}\n"
            f"  reference: {show(reference)}"
        )


@settings(
    max_examples=int(os.environ.get("SEGMENTS_ORACLE_EXAMPLES", ORACLE_EXAMPLES)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rule=operations(4), documents=st.lists(data_objects(), min_size=1, max_size=8))
def test_apply_agrees_with_json_logic_js(oracle: JsOracle, rule: Any, documents: list[Any]) -> None:
    assert_agrees(oracle, rule, documents)


#: Corners that random rules seldom reach, each with the documents that show it.
EDGE_CASES: list[tuple[Any, list[Any]]] = [
    # JavaScript keeps the sign of a zero, and dividing by it shows: 1 / -0 is -Infinity.
    ({"/": [1, {"-": [{"var": "a"}]}]}, [{"a": 0}, {"a": None}, {"a": False}, {"a": ""}]),
    ({"/": [1, {"%": [{"var": "a"}, 2]}]}, [{"a": -4}, {"a": 4}]),
    ({"/": [1, {"min": [0, {"var": "a"}]}]}, [{"a": -0.0}]),
    ({"/": [1, {"max": [{"var": "a"}, 0]}]}, [{"a": -0.0}]),
    # JavaScript's digits are ASCII only: "٣" is no number, "١" and "²" are no index.
    ({"+": [{"var": "a"}]}, [{"a": "\u0663"}, {"a": "1\u0663"}, {"a": "\U0001d7d9"}]),
    ({"==": [{"var": "a"}, 3]}, [{"a": "\u0663"}, {"a": " 3 "}, {"a": "0x3"}]),
    ({"var": "\u0661"}, [["x", "y"], "xy"]),
    ({"var": "\u00b2"}, [["x", "y", "z"], "xyz"]),
    # Strings are indexed and measured in UTF-16 code units.
    ({"var": "a.1"}, [{"a": "a\U0001f600b"}]),
    ({"cat": [{"var": "a.length"}, {"substr": [{"var": "a"}, 1, 1]}]}, [{"a": "a\U0001f600b"}]),
    # missing evaluates {"var": key} for each key: an array key is var's argument list, and an
    # object key is a rule (which throws when its key is no operator), even for an argument that
    # another operator does not need.
    ({"missing": [["a", ["b", 7], []]]}, [{}, None]),
    ({"missing": [{"var": "k"}]}, [{"k": {"x": 1}}, {"k": {}}, {"k": ["a", "k"]}]),
    ({"var": ["a", {"missing": [{"var": "k"}]}]}, [{"a": 1, "k": {"x": 1}}]),
]


@pytest.mark.parametrize(("rule", "documents"), EDGE_CASES, ids=[to_json(rule) for rule, _ in EDGE_CASES])
def test_edge_cases_agree_with_json_logic_js(oracle: JsOracle, rule: Any, documents: list[Any]) -> None:
    assert_agrees(oracle, rule, documents)


def test_the_oracle_answers(oracle: JsOracle) -> None:
    """The harness itself: values, thrown errors, the non-finite numbers, and a quiet ``log``."""
    results = oracle.evaluate(
        [
            ({"+": [1, "2"]}, None),
            ({"var": "a.b"}, {"a": {"b": [1, {"c": None}]}}),
            ({"missing": [{"var": "k"}]}, {"k": {"not_an_operator": 1}}),
            ({"map": [[1, -1], {"/": [{"var": ""}, 0]}]}, None),
            ({"+": ["x"]}, None),
            ({"log": "quiet"}, None),
        ]
    )
    assert results[:2] == [JsResult(value=3), JsResult(value=[1, {"c": None}])]
    assert results[2].raised and "Unrecognized operation" in results[2].error
    assert results[3] == JsResult(value=[math.inf, -math.inf])
    assert same_value(results[4].value, math.nan) and not same_value(results[4].value, None)
    assert results[5] == JsResult(value="quiet")

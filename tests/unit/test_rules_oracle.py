"""Property test: our JSONLogic evaluation means what json-logic-js 2.0.5 means.

Hypothesis generates rules over every classic operator and a handful of data documents per rule;
json-logic-js (run by node, tests/oracle/oracle.js) evaluates the whole batch in one round trip, and
``apply`` must give the same value for each document, or raise where the reference throws.

The default run is ``ORACLE_EXAMPLES`` rules; ask for more with ``SEGMENTS_ORACLE_EXAMPLES=5000``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contact_segments.rules import apply
from tests.support.jsoracle import JsOracle, JsResult, normalise, require_oracle, same_value, to_json
from tests.support.strategies import data_objects, operations

ORACLE_EXAMPLES = 400

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


@settings(
    max_examples=int(os.environ.get("SEGMENTS_ORACLE_EXAMPLES", ORACLE_EXAMPLES)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rule=operations(3), documents=st.lists(data_objects(), min_size=1, max_size=6))
def test_apply_agrees_with_json_logic_js(oracle: JsOracle, rule: Any, documents: list[Any]) -> None:
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


def test_the_oracle_answers(oracle: JsOracle) -> None:
    """The harness itself: values, thrown errors, and JSON's null for NaN and the infinities."""
    results = oracle.evaluate(
        [
            ({"+": [1, "2"]}, None),
            ({"var": "a.b"}, {"a": {"b": [1, {"c": None}]}}),
            ({"missing": [{"var": "k"}]}, {"k": {"not_an_operator": 1}}),
            ({"/": [1, 0]}, None),
            ({"log": "quiet"}, None),
        ]
    )
    assert results[:2] == [JsResult(value=3), JsResult(value=[1, {"c": None}])]
    assert results[2].raised and "Unrecognized operation" in results[2].error
    assert results[3:] == [JsResult(value=None), JsResult(value="quiet")]
    assert normalise(float("inf")) is None

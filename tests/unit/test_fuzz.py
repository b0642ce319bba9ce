"""Fuzzing the three validators users reach with documents of their own: a segment rule
(``validate_segment_rule``), a contact snapshot (``load_snapshot``, and the JSON Lines reader in
front of it) and an export file (``rules.transfer``).

Each gets arbitrary JSON-ish values (recursive, with hostile keys, deep nesting, NaN and
infinite floats, huge integers, NUL, lone surrogates, non-JSON Python values), arbitrary text and
bytes, and valid documents with one part replaced by such a value.  Each must either accept the
document or raise its documented validation error (``RuleValidationError``; ``InvalidInput``;
``ExportValidationError``) - never anything else.  What a validator accepts must also be usable:
a rule compiles (Python and SQL, on both dialects) and validates again to itself; a snapshot holds
nothing a database cannot store; an export's rules are canonical.

The budget is :data:`EXAMPLES` examples per target (300 in CI); set ``SEGMENTS_FUZZ_EXAMPLES``
for a longer run (``tox -e fuzz`` runs 20,000).
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from marshmallow import ValidationError
from sqlalchemy.dialects import postgresql, sqlite

from contact_segments.cli import iter_json_lines
from contact_segments.rules import compile_predicate, jsontext, rule_to_sql
from contact_segments.rules.catalog import FIELDS, STRING_FIELDS, STRING_LIST_FIELDS, TIMESTAMP_FIELDS
from contact_segments.rules.operators import CLASSIC
from contact_segments.rules.validation import RuleValidationError, validate_segment_rule
from contact_segments.service import InvalidInput, SegmentsError
from contact_segments.service.snapshots import _SCHEMA, MAX_VALUES, _load_plain, load_snapshot
from contact_segments.storage import contact_view_columns
from tests.support.segment_strategies import raw_segment_rules, snapshots

EXAMPLES = int(os.environ.get("SEGMENTS_FUZZ_EXAMPLES", "300"))
NOW = 1_770_000_000.0

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# ----------------------------------------------------------------------------- hostile values

HOSTILE_STRINGS = [
    "", " ", "\u0000", "a\u0000b", "\ud800", "\udfff", "x\udc00y", "\ufeff", "\u202e", "\u001b[2J", "\n", "\t",
    "__class__", "__proto__", "constructor", "prototype", "toString", "__dict__", "__globals__",
    "'; DROP TABLE contacts; --", "../../etc/passwd", "..\\..\\boot.ini", "${7*7}", "{{7*7}}", "%s%n",
    "NaN", "Infinity", "1e400", "null", "true", "0x10", "-0", "\u0663", "😀", "e\u0301",
    "now", "custom_fields", "custom_fields.", "custom_fields.__proto__", "custom_fields.a.b", "tags.length",
]
SPIKES = ["\u0000", "\ud800", "\udfff", "\u001b", "\ufeff", "\n", "\u202e", "'", '"', "\\", "%", "_", ","]
KEYS = sorted({*CLASSIC, "?:", *FIELDS, *HOSTILE_STRINGS})

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)  # lone surrogates included
numbers = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 2**53 - 1, 2**53, -(2**53), 2**63, 2**64, -(2**64), 10**400, 604_800]),
    st.floats(),  # NaN, ±inf, -0.0, subnormals included
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 0.1]),
)
json_scalars = st.one_of(st.none(), st.booleans(), numbers, any_text, st.sampled_from(HOSTILE_STRINGS), st.sampled_from(KEYS))
#: Python values that are not JSON: a validator must say so, not crash on them.
not_json = st.one_of(
    st.tuples(json_scalars), st.frozensets(st.integers(), max_size=2), st.binary(max_size=4),
    st.just(Decimal("1.5")), st.just(datetime.date(2026, 1, 1)), st.just(object()), st.just(1j),
)
keys = st.one_of(st.sampled_from(KEYS), any_text)


def values(scalars: SearchStrategy[Any] = json_scalars, max_leaves: int = 25) -> SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(keys, children, max_size=4),
            st.builds(lambda k, v: {k: v}, keys, children),  # one key: what an operation looks like
        ),
        max_leaves=max_leaves,
    )


def deep(levels: int, inner: Any, kind: int) -> Any:
    for _ in range(levels):
        inner = [inner] if kind == 0 else {"!": [inner]} if kind == 1 else {"and": [True, inner]}
    return inner


deeply_nested = st.builds(deep, st.integers(0, 300) | st.sampled_from([1_000, 10_000]), json_scalars, st.integers(0, 2))
hostile_values = st.one_of(values(), values(st.one_of(json_scalars, not_json), max_leaves=10), deeply_nested, not_json)


@st.composite
def mutated(draw: st.DrawFn, base: SearchStrategy[Any], replacement: SearchStrategy[Any] = hostile_values) -> Any:
    """A valid document with one node (or a key) replaced: deep inside, where validators branch."""
    document = json.loads(json.dumps(draw(base)))
    nodes: list[tuple[Any, Any]] = []  # (container, key or index)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                nodes.append((node, key))
                walk(value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                nodes.append((node, index))
                walk(value)

    walk(document)
    if not nodes:
        return draw(replacement)
    container, key = draw(st.sampled_from(nodes))
    how = draw(st.sampled_from(["key", "scalar", "value", "spike"]))
    if how == "key" and isinstance(container, dict):
        container[draw(keys)] = container.pop(key)  # a hostile key instead of a hostile value
    elif how == "spike" and isinstance(container[key], str):  # a hostile character inside a good string
        text, at = container[key], draw(st.integers(0, len(container[key])))
        container[key] = text[:at] + draw(st.sampled_from(SPIKES)) + text[at:]
    else:
        container[key] = draw(json_scalars if how == "scalar" else replacement)
    return document


def text_of(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError, RecursionError):  # not JSON, or deeper than json.dumps goes
        return "[" * 2000


json_texts = st.one_of(
    st.text(max_size=40), any_text, st.binary(max_size=40).map(bytes),
    values().map(text_of), mutated(raw_segment_rules()).map(text_of),
    st.builds(lambda t, i, junk: t[:i] + junk + t[i:], values().map(text_of), st.integers(0, 40),
              st.sampled_from(["NaN", "Infinity", "1e400", "\u0000", '"', "[", "}", ",", "\ufeff", '"a": 1, "a": 2', "1" * 5000])),
)

def assert_storable(value: Any) -> None:
    """What a validator accepted, a database can store: finite numbers, no NUL, no lone surrogates."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    assert "\\u0000" not in text, text[:200]
    text.encode("utf-8")  # raises on a lone surrogate


# ----------------------------------------------------------------------------- rules

COLUMNS = contact_view_columns()
EMPTY_VIEW: dict[str, Any] = {
    **dict.fromkeys((*STRING_FIELDS, *TIMESTAMP_FIELDS)), **{name: [] for name in STRING_LIST_FIELDS},
    "id": "c-1", "custom_fields": {}, "now": NOW,
}


def check_rule(document: Any) -> None:
    try:
        rule = validate_segment_rule(document)
    except RuleValidationError as error:
        assert error.messages and all(
            isinstance(path, str) and path.startswith("$") and isinstance(message, str) and message
            for path, message in error.messages.items()
        ), error.messages
        assert sum(len(message) for message in error.messages.values()) < 1_000_000
        return
    # Accepted: storable, the canonical form is stable, and both compilers take it.
    assert_storable(rule)
    assert validate_segment_rule(rule) == rule
    compile_predicate(rule)(EMPTY_VIEW)
    condition = rule_to_sql(rule, COLUMNS, now=NOW)
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        str(condition.compile(dialect=dialect))


@fuzz
@given(hostile_values)
def test_fuzz_rule_values(document: Any) -> None:
    check_rule(document)


@fuzz
@given(mutated(raw_segment_rules()))
def test_fuzz_rule_mutations(document: Any) -> None:
    check_rule(document)


@fuzz
@given(json_texts)
def test_fuzz_rule_texts(text: str | bytes) -> None:
    check_rule(text)


# ----------------------------------------------------------------------------- snapshots


def check_snapshot(document: Any) -> None:
    try:
        loaded = load_snapshot(document)
    except InvalidInput as error:
        assert error.message and len(str(error)) < 100_000
        return
    # Accepted: nothing a database (or JavaScript) cannot hold, and the command would read it too.
    assert_storable(loaded)
    assert all(abs(v) <= 2**53 for v in loaded["custom_fields"].values() if type(v) is int)  # floats: doubles
    try:
        text = json.dumps(document)
    except (TypeError, ValueError):  # a Python value JSON has no word for (a tuple of tags): not from a file
        return
    assert not jsontext.more_values_than(text, MAX_VALUES)


valid_snapshots = st.builds(lambda fields, n: {"id": f"c-{n}", "version": n, **fields}, snapshots(NOW), st.integers(0, 9))


@fuzz
@given(hostile_values)
def test_fuzz_snapshot_values(document: Any) -> None:
    check_snapshot(document)


@fuzz
@given(mutated(valid_snapshots))
def test_fuzz_snapshot_mutations(document: Any) -> None:
    check_snapshot(document)


@pytest.mark.parametrize("ident", [deep(10_000, None, 0), 10**5000, list(range(1_000_000))], ids=["deep", "digits", "long"])
def test_a_snapshot_with_an_outlandish_id_is_refused_with_a_short_message(ident: Any) -> None:
    """The message quotes the id: a short excerpt, whatever it is (repr() of the first would
    recurse too deep, of the second refuse to print it, of the third take megabytes)."""
    with pytest.raises(InvalidInput, match="^invalid contact snapshot ") as refused:
        load_snapshot({"id": ident, "version": 1})
    assert len(refused.value.message) < 150


@fuzz
@given(st.one_of(mutated(valid_snapshots), mutated(valid_snapshots, json_scalars), hostile_values))
def test_the_plain_path_loads_what_the_schema_loads(document: Any) -> None:
    """Two ways to load a snapshot: the plain path may decline (None), but what it loads, the
    schema loads to the same row; what the schema refuses, it declines."""
    if not isinstance(document, dict):
        return  # refused before either path runs
    plain = _load_plain(document)
    try:
        expected = _SCHEMA.load(document)
    except ValidationError:
        assert plain is None
        return
    assert plain is None or exactly(plain) == exactly(expected)


@fuzz
@given(valid_snapshots)
def test_the_plain_path_takes_plain_snapshots(document: dict[str, Any]) -> None:
    """A snapshot of JSON values that the schema accepts is loaded by the plain path, to the same row."""
    assert exactly(_load_plain(document)) == exactly(_SCHEMA.load(document))


def exactly(loaded: Any) -> str:
    """A loaded snapshot as text that tells ``True``, ``1`` and ``1.0`` (and ``0.0``, ``-0.0``) apart."""
    return json.dumps(loaded, sort_keys=True)


@fuzz
@given(st.lists(st.one_of(json_texts, mutated(valid_snapshots).map(text_of)), max_size=4))
def test_fuzz_json_lines(lines: list[str | bytes]) -> None:
    """The command's JSON Lines reader yields documents or says which line is bad: nothing else."""
    data = b"\n".join(line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass") for line in lines)
    try:
        for _, document in iter_json_lines(io.BytesIO(data), max_values=MAX_VALUES):
            check_snapshot(document)
    except SegmentsError as error:
        assert str(error).startswith("line ")


def test_many_commas_inside_strings_are_not_values() -> None:
    """The command's count of values, made before parsing, ignores commas inside strings: a valid
    snapshot of a thousand tags of a thousand commas each is read."""
    document = {"id": "c-1", "version": 1, "tags": [f"{n:03d}" + "," * 997 for n in range(1000)]}
    assert not jsontext.more_values_than(json.dumps(document), MAX_VALUES)
    load_snapshot(document)


# ----------------------------------------------------------------------------- imports


def _transfer() -> Any:
    return pytest.importorskip("contact_segments.rules.transfer", reason="rules/transfer.py (issue 5) does not exist yet")


def _hostile_generator() -> Any:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "data" / "hostile" / "generate.py"
    spec = importlib.util.spec_from_file_location("hostile_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXPORT: dict[str, Any] = _hostile_generator().EXPORT


@st.composite
def exports(draw: st.DrawFn) -> Any:
    segments = draw(st.lists(raw_segment_rules(), min_size=1, max_size=3))
    texts = st.one_of(st.just(""), any_text, st.sampled_from(HOSTILE_STRINGS))
    return {
        **EXPORT,
        "segments": [
            {"name": f"S{n}", "description": draw(texts), "rule": rule, "conditions": None, "is_default": False}
            for n, rule in enumerate(segments)
        ],
    }


def check_export(document: Any) -> None:
    transfer = _transfer()
    export, problems = transfer.check_export(document)  # never raises
    assert (export is None) == bool(problems)
    try:
        loaded = transfer.load_export(document)
    except transfer.ExportValidationError as error:
        assert error.messages and all(isinstance(m, str) for m in error.messages.values())
        assert len(str(error)) < 1_000_000
        return
    for segment in loaded.segments:
        assert validate_segment_rule(segment.rule) == segment.rule
        assert_storable([segment.name, segment.description, segment.rule, segment.conditions])


@fuzz
@given(hostile_values)
def test_fuzz_import_values(document: Any) -> None:
    check_export(document)


@fuzz
@given(mutated(exports()))
def test_fuzz_import_mutations(document: Any) -> None:
    check_export(document)


@fuzz
@given(st.one_of(json_texts, mutated(exports()).map(text_of)))
def test_fuzz_import_texts(text: str | bytes) -> None:
    check_export(text)

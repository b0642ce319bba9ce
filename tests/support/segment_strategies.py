"""Hypothesis strategies for *segment* rules and the contacts they are evaluated on.

A segment rule is the typed dialect :func:`~contact_segments.rules.validate_segment_rule` accepts
(see :mod:`contact_segments.rules.validation`), so the rules here are built from that grammar, not
from classic JSONLogic at large:

* comparisons of one catalog field with literals of a fitting type (``==``, ``===``, ``!=``,
  ``!==``; ``<``, ``<=``, ``>``, ``>=`` on timestamps and custom fields), the field on either side;
* time: a timestamp against a number, ``now`` or ``now ± N``, and the 3-argument between forms of
  ``<`` and ``<=`` (``[low, field, high]``);
* ``in``: a string in ``tags`` / ``channels``, a substring of a string or custom field, a string or
  custom field in a non-empty literal list;
* ``missing`` / ``missing_some`` of catalog fields, a bare ``var`` (truthiness), ``true``/``false``;
* ``!``, ``!!``, ``and``, ``or``, ``if`` (and ``?:``) nesting them, sometimes in the unary shorthand
  (``{"!": x}``) or with ``var`` in its list forms, which validation normalises; and ``and`` with a
  guard on one of its fields (``{"!!": [T]}``, ``!missing``), as product conditions write them.

Entry points: :func:`raw_segment_rules` (what a user might send), :func:`segment_rules` (the same,
through ``validate_segment_rule``: the canonical form the compilers see), :func:`contact_sets` (host
contact snapshots as :func:`~contact_segments.service.snapshots.load_snapshot` accepts them, with
ISO-8601 timestamps placed on and around the instants the rules compare with) and
:func:`seeded_rules` (canonical rules whose literals are often values of given contacts, so that
comparisons meet the data: ``5 == "5"`` needs a 5 in the very field compared with "5").

The values lean on what JavaScript makes awkward and SQL makes easy to get wrong: null, ``""``,
``[]``, numeric strings (``" 2 "``, ``"1e3"``, ``"0x10"``, ``""``), ``-0``, booleans against numbers,
case and LIKE wildcards in substrings, characters outside the BMP, custom fields of every scalar
type or absent, and timestamps exactly at ``now - N``.  Strings hold what both a snapshot and a rule
may hold: no NUL, no lone surrogate.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from contact_segments.rules import jsvalues as js
from contact_segments.rules.catalog import STRING_FIELDS, STRING_LIST_FIELDS, TIMESTAMP_FIELDS
from contact_segments.rules.validation import RuleValidationError, validate_segment_rule

# ----------------------------------------------------------------------------- instants

T0 = 1_700_000_000
"""An instant near which ``now`` lies (2023-11-14)."""

NOWS: list[float] = [T0, T0 + 0.25, T0 + 7 * 86_400]
"""The evaluation instants: whole and fractional seconds, and a week later."""

OFFSETS: list[int | float] = [0, 1, 0.5, 60, 3_600, 86_400, 604_800, 2_592_000]
"""The N of ``now ± N`` in rules; contacts get timestamps at and around ``now ± N``."""

ABSOLUTE_TIMES: list[int | float] = [0, 1, -1, 1_000.5, T0 - 86_400, T0, T0 + 0.5]
"""Literal timestamps rules compare with; contacts sometimes hold exactly these."""

NUDGES: list[float] = [0, 0, 0, 1, -1, 0.5, -0.5, 0.000_001, -0.000_001]
"""How far from a threshold a contact's timestamp lies (0, the boundary itself, most often)."""

# ----------------------------------------------------------------------------- values

STRINGS: list[str] = [
    "", " ", "a", "A", "abc", "ABC", "Abc", "b", "MY", "my", "SG", "vip", "VIP", "lead", "Lead",
    "0", "1", "-0", "5", " 5 ", "2", " 2 ", "1e3", "1000", "0x10", "16", "0b1", "0o7", "1.5", ".5", "5.",
    "+1", "-1", "1e", "abc5", "Infinity", "-Infinity", "true", "false", "null", "\u00a03", "\ufeff4",
    "\t7\n", "\u0663", "\uff13", "1\u0663", "a,b", "%", "_", "a%", "a_c", "\\", "'", '"', "😀", "a😀b", "é", "e\u0301", "ß", "SS",
    "ann@acme.com", "Bob@ACME.com", "acme", "@acme.com", "ACME",
]  # fmt: skip
"""Strings for string fields, custom fields, tags and rule literals alike, so that they meet."""

#: Numeric strings beyond a double: Number() gives +-Infinity or 0 (written out, 400 digits).
STRINGS += ["1e400", "-1e400", "1e-400", "0." + "0" * 400 + "1", "1" + "0" * 400]

TAGS: list[str] = ["vip", "VIP", "promotion", "lead", "", "1", "a😀b", "a,b", "%"]
CHANNELS: list[str] = ["whatsapp", "WhatsApp", "email", "sms", ""]
CUSTOM_KEYS: list[str] = ["n", "score", "plan"]
#: The fields most rules read, so that rules and contacts meet often (the others still appear).
HOT_STRING_FIELDS: list[str] = ["email", "country", "first_name"]
HOT_CUSTOM_KEYS: list[str] = ["n", "score"]

NUMBERS: list[int | float] = [
    0, 1, -1, 2, 3, 5, 7, 10, 16, 20, 1000, 0.5, -1.5, 1.5, 2.5, 0.1, 1e-7, 1e16, 1e21, 123.456,
    2**53 - 1, -(2**53 - 1),
]  # fmt: skip
"""Numbers for custom fields and rule literals."""


def _choose(*options: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """One of ``options``, each as likely (list one twice to double its weight).

    ``st.one_of`` flattens the ``one_of``s nested in it and picks among all their branches, which
    would let the option with the most alternatives crowd out the others.
    """
    return st.sampled_from(options).flatmap(lambda option: option)


_SAFE = 2**53 - 1
_text_alphabet = st.characters(codec="utf-8", exclude_characters="\x00")  # what snapshots and rules allow

#: Strings that fields and literals share most often: case variants, numbers, the empty string.
COMMON_STRINGS: list[str] = [
    "", " ", "a", "A", "MY", "my", "vip", "VIP", "5", " 5 ", "0", "1", "ann@acme.com", "Bob@ACME.com", "a😀b",
]  # fmt: skip
strings: SearchStrategy[str] = _choose(
    st.sampled_from(COMMON_STRINGS),
    st.sampled_from(COMMON_STRINGS),
    st.sampled_from(STRINGS),
    st.sampled_from(STRINGS),
    st.text(_text_alphabet, max_size=4),
)
numbers: SearchStrategy[int | float] = st.one_of(
    st.sampled_from(NUMBERS),
    st.sampled_from(NUMBERS),
    st.integers(-1_000, 1_000),
    st.integers(-_SAFE, _SAFE),
    st.floats(allow_nan=False, allow_infinity=False),
)
#: Scalars that custom fields and rule literals both draw from often, so that ``5 == "5"``,
#: ``true == 1`` and ``"" == 0`` come up.
SHARED: list[Any] = [
    None, True, False, 0, 1, 2, 5, -1, 0.5, "", " ", "0", "1", "5", " 5 ", "5.0", "0x5", "abc", "true", "a😀b",
]  # fmt: skip
shared = st.sampled_from(SHARED)


def _survives_jsonb(number: float) -> bool:
    """Whether a number loads back from PostgreSQL JSONB as the same JavaScript number.

    A float of 2**53 or more is written without a fraction, and psycopg loads it as a Python
    ``int`` holding its shortest decimal exactly, e.g. 1e300 comes back as ``10**300``, which is
    not the double 1e300 (a known storage bug, pinned by an xfail in test_sql_equivalence.py).
    """
    return not isinstance(number, float) or abs(number) < 2**53 or Decimal(repr(number)) == Decimal(number)


custom_values: SearchStrategy[Any] = _choose(
    shared, shared, shared, st.none(), st.booleans(), numbers.filter(_survives_jsonb), strings
)
custom_literals: SearchStrategy[Any] = _choose(
    shared, shared, shared, st.none(), st.booleans(), numbers, strings
)
#: What ``in`` looks for in a string: the empty string and single characters find the most.
needles: SearchStrategy[str] = _choose(
    st.sampled_from(["", "", "a", "A", "@", "acme", "5", "1", " ", "%", "_", "😀", "\u0663"]), strings
)
time_numbers: SearchStrategy[int | float] = st.one_of(
    st.sampled_from(ABSOLUTE_TIMES),
    st.sampled_from(ABSOLUTE_TIMES),
    st.integers(T0 - 40 * 86_400, T0 + 40 * 86_400),
    st.floats(-1e10, 1e10),
)

# ----------------------------------------------------------------------------- rules


def _var(names: SearchStrategy[str], default: SearchStrategy[Any] | None = None) -> SearchStrategy[Any]:
    """``{"var": name}``, or one of the list forms that validation normalises."""
    forms = [
        names.map(lambda name: {"var": name}),
        names.map(lambda name: {"var": name}),
        names.map(lambda name: {"var": [name]}),
        names.map(lambda name: {"var": [name, None]}),
    ]
    if default is not None:  # a default never applies: every catalog field is in the view
        forms.append(st.tuples(names, default).map(lambda nd: {"var": [nd[0], nd[1]]}))
    return st.one_of(forms)


string_names = _choose(st.sampled_from(HOT_STRING_FIELDS), st.sampled_from(STRING_FIELDS))
list_names = st.sampled_from(STRING_LIST_FIELDS)
timestamp_names = st.sampled_from(TIMESTAMP_FIELDS)
custom_names = _choose(
    st.sampled_from([f"custom_fields.{key}" for key in HOT_CUSTOM_KEYS]),
    st.sampled_from([f"custom_fields.{key}" for key in CUSTOM_KEYS]),
)
any_names = st.one_of(string_names, list_names, timestamp_names, custom_names, custom_names)

string_vars = _var(string_names, strings)
list_vars = _var(list_names)
timestamp_vars = _var(timestamp_names, time_numbers)
custom_vars = _var(custom_names)  # custom fields take no default in segment rules
any_vars = st.one_of(string_vars, list_vars, timestamp_vars, custom_vars, custom_vars)

NOW = {"var": "now"}
time_points: SearchStrategy[Any] = st.one_of(
    time_numbers,
    st.just(NOW),
    st.tuples(st.sampled_from(["-", "+"]), st.sampled_from(OFFSETS)).map(lambda o: {o[0]: [NOW, o[1]]}),
    st.tuples(st.sampled_from(["-", "+"]), st.sampled_from(OFFSETS)).map(lambda o: {o[0]: [NOW, o[1]]}),
    st.tuples(st.sampled_from(["-", "+"]), st.integers(0, 40 * 86_400)).map(lambda o: {o[0]: [NOW, o[1]]}),
)


def _either_side(field: SearchStrategy[Any], other: SearchStrategy[Any]) -> SearchStrategy[list[Any]]:
    return st.tuples(field, other, st.booleans()).map(lambda t: [t[0], t[1]] if t[2] else [t[1], t[0]])


def _equalities() -> SearchStrategy[Any]:
    operator = st.sampled_from(["==", "===", "!=", "!=="])
    pairs = _choose(
        _either_side(string_vars, st.one_of(st.none(), strings)),
        _either_side(timestamp_vars, st.one_of(st.none(), time_numbers)),
        _either_side(custom_vars, custom_literals),
        _either_side(custom_vars, custom_literals),
    )
    return st.tuples(operator, pairs).map(lambda t: {t[0]: t[1]})


def _orderings() -> SearchStrategy[Any]:
    operator = st.sampled_from(["<", "<=", ">", ">="])
    between = st.sampled_from(["<", "<="])
    timestamp_pair = _either_side(timestamp_vars, time_points)
    custom_pair = _either_side(custom_vars, numbers)
    return _choose(
        st.tuples(operator, timestamp_pair).map(lambda t: {t[0]: t[1]}),
        st.tuples(operator, timestamp_pair).map(lambda t: {t[0]: t[1]}),
        st.tuples(operator, custom_pair).map(lambda t: {t[0]: t[1]}),
        st.tuples(between, time_points, timestamp_vars, time_points).map(lambda t: {t[0]: list(t[1:])}),
        st.tuples(between, numbers, custom_vars, numbers).map(lambda t: {t[0]: list(t[1:])}),
    )


def _memberships() -> SearchStrategy[Any]:
    element = _choose(st.sampled_from(TAGS + CHANNELS), st.sampled_from(TAGS + CHANNELS), strings)
    in_list = st.tuples(element, list_vars).map(lambda t: {"in": list(t)})
    substring = st.tuples(needles, st.one_of(string_vars, custom_vars)).map(lambda t: {"in": list(t)})
    string_choices = st.lists(st.one_of(st.none(), strings), min_size=1, max_size=4)
    custom_choices = st.lists(custom_literals, min_size=1, max_size=4)
    field_in_list = st.one_of(
        st.tuples(string_vars, string_choices).map(lambda t: {"in": list(t)}),
        st.tuples(custom_vars, custom_choices).map(lambda t: {"in": list(t)}),
    )
    return _choose(in_list, substring, substring, field_in_list, field_in_list)


def _missing() -> SearchStrategy[Any]:
    names = st.lists(any_names, min_size=1, max_size=3)
    return _choose(
        names.map(lambda keys: {"missing": keys}),
        names.map(lambda keys: {"missing": [keys]}),  # the list form
        any_names.map(lambda key: {"missing": key}),  # the unary shorthand
        _missing_some(),
    )


@st.composite
def _missing_some(draw: st.DrawFn) -> Any:
    keys = draw(st.lists(any_names, min_size=1, max_size=4))
    need = draw(st.integers(1, len(keys)))
    return {"missing_some": [need, keys]}


@cache
def leaf_conditions() -> SearchStrategy[Any]:
    """One condition without connectives: a comparison, an ``in``, a ``missing``, a truth test."""
    return _choose(
        st.booleans(),
        any_vars,  # truthiness
        any_vars,
        _missing(),
        _memberships(),
        _memberships(),
        _equalities(),
        _equalities(),
        _equalities(),
        _orderings(),
        _orderings(),
        _orderings(),
    )


def _connective(op: str, arguments: SearchStrategy[list[Any]]) -> SearchStrategy[Any]:
    """``{op: [args]}``, or ``{op: arg}`` (the unary shorthand) for one argument that is no list."""

    def build(t: tuple[list[Any], bool]) -> Any:
        args, sugar = t
        return {op: args[0]} if sugar and len(args) == 1 else {op: args}

    return st.tuples(arguments, st.booleans()).map(build)


def _fields_read(rule: Any) -> set[str]:
    """The fields a rule reads that may be null (``tags``, ``channels`` and ``now`` never are)."""
    found: set[str] = set()
    stack = [rule]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for op, args in node.items():
                if op == "var":
                    name = args[0] if isinstance(args, list) else args
                    found.add(name)
                else:
                    stack.append(args)
    return found - {"tags", "channels", "now"}


_GUARDS = [  # the first two are no guards: "and" must not take them for guards
    lambda name: {"!": [{"var": name}]},
    lambda name: {"missing": [name]},
    lambda name: {"!!": [{"var": name}]},
    lambda name: {"var": name},
    lambda name: {"!": {"missing": [name]}},
    lambda name: {"!": [{"!": [{"var": name}]}]},
    lambda name: {"!": {"or": [{"!": {"var": name}}, False]}},
    lambda name: {"and": [True, {"!!": {"var": name}}]},
]


@st.composite
def _guarded(draw: st.DrawFn, child: SearchStrategy[Any]) -> Any:
    """``child`` in an ``and`` with a guard that one of its fields is set, as product conditions
    write "more than 30 days ago" (``{"!!": [T]}`` and ``T < now - 30 days``)."""
    rule = draw(child)
    names = sorted(_fields_read(rule)) or [draw(st.one_of(string_names, timestamp_names, custom_names))]
    guard = draw(st.sampled_from(_GUARDS))(draw(st.sampled_from(names)))
    parts = draw(st.permutations([guard, rule, *draw(st.lists(child, max_size=1))]))
    return {"and": parts}


@cache
def raw_segment_rules(depth: int = 3) -> SearchStrategy[Any]:
    """A segment rule as a user might write it: valid, not necessarily canonical."""
    if depth <= 0:
        return leaf_conditions()
    child = raw_segment_rules(depth - 1)
    return st.deferred(
        lambda: _choose(
            leaf_conditions(),
            leaf_conditions(),
            leaf_conditions(),
            _connective("!", st.lists(child, min_size=1, max_size=1)),
            _connective("!!", st.lists(child, min_size=1, max_size=1)),
            _connective("and", st.lists(child, min_size=1, max_size=3)),
            _connective("or", st.lists(child, min_size=1, max_size=3)),
            _connective("if", st.lists(child, min_size=2, max_size=5)),
            _connective("?:", st.lists(child, min_size=3, max_size=3)),
            _guarded(child),
            _guarded(child),
        )
    )


@cache
def segment_rules(depth: int = 3) -> SearchStrategy[Any]:
    """A segment rule in canonical form: :func:`raw_segment_rules` through ``validate_segment_rule``."""
    return raw_segment_rules(depth).map(validate_segment_rule)


# ----------------------------------------------------------------------------- contacts


def iso(epoch_seconds: float) -> str:
    """An epoch instant as the ISO-8601 text a host sends."""
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat()


def timestamps(now: float) -> SearchStrategy[str | None]:
    """A timestamp as a snapshot holds it (ISO-8601 or null), often on a threshold a rule uses."""
    near_now = st.tuples(st.sampled_from(OFFSETS), st.sampled_from([-1, 1]), st.sampled_from(NUDGES)).map(
        lambda t: now + t[1] * t[0] + t[2]
    )
    instants = st.one_of(
        near_now,
        near_now,
        near_now,
        st.sampled_from(ABSOLUTE_TIMES),
        st.integers(T0 - 40 * 86_400, T0 + 40 * 86_400),
    )
    return st.one_of(st.none(), instants.map(iso))


_ABSENT = object()
_custom_or_absent = _choose(st.just(_ABSENT), custom_values, custom_values, custom_values)  # absent 1 in 4


def snapshots(now: float) -> SearchStrategy[dict[str, Any]]:
    """One host contact snapshot (without ``id`` and ``version``): every field, nulls and empties included."""
    string_value = st.one_of(st.none(), st.just(""), strings)
    return st.fixed_dictionaries(
        {
            **dict.fromkeys(STRING_FIELDS, string_value),
            "tags": st.lists(st.one_of(st.sampled_from(TAGS), strings), max_size=3, unique=True),
            "channels": st.lists(st.sampled_from(CHANNELS), max_size=2, unique=True),
            **dict.fromkeys(TIMESTAMP_FIELDS, timestamps(now)),
            "custom_fields": st.fixed_dictionaries(dict.fromkeys(CUSTOM_KEYS, _custom_or_absent)).map(
                lambda values: {key: value for key, value in values.items() if value is not _ABSENT}
            ),
        }
    )


def contact_sets(now: float, max_size: int = 8) -> SearchStrategy[list[dict[str, Any]]]:
    """Snapshots with ids ``c0``, ``c1``, ... and version 1."""
    return st.lists(snapshots(now), min_size=2, max_size=max_size).map(
        lambda items: [{"id": f"c{i}", "version": 1, **item} for i, item in enumerate(items)]
    )


# ----------------------------------------------------------------------------- rules that meet contacts

#: The operators whose literal operands :func:`seeded_rules` may replace with a contact's value.
_COMPARISONS = frozenset({"==", "===", "!=", "!==", "<", "<=", ">", ">=", "in"})


def contact_values(contacts: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """By field (``custom_fields.<key>`` for custom fields), the scalars the contacts hold there,
    and what JavaScript takes for them: ``5`` and ``"5"``, ``" 5 "`` and ``true``, ``"VIP"`` and
    ``"vip"``, pieces of a string, a timestamp's seconds and the seconds around it."""
    values: dict[str, list[Any]] = {}
    for contact in contacts:
        for name, value in contact.items():
            if name in TIMESTAMP_FIELDS and value is not None:
                values.setdefault(name, []).append(datetime.fromisoformat(value).timestamp())
            elif name in STRING_FIELDS:
                values.setdefault(name, []).append(value)
            elif name in STRING_LIST_FIELDS:
                values.setdefault(name, []).extend(value)
            elif name == "custom_fields":
                for key, item in value.items():
                    values.setdefault(f"custom_fields.{key}", []).append(item)
    return {name: _variants(items) for name, items in values.items()}


def _variants(values: list[Any]) -> list[Any]:
    variants: list[Any] = []
    for value in values:
        variants.append(value)
        if isinstance(value, bool):
            variants += [int(value), str(int(value))]
        elif isinstance(value, int | float):
            text = js.number_to_string(value)
            variants += [text, f" {text} ", value + 1, value - 1] + ([bool(value)] if value in (0, 1) else [])
        elif isinstance(value, str) and value:
            variants += [value.upper(), value.lower(), value.strip(), value[1:], value[:-1], value[:1]]
            if math.isfinite(number := js.string_to_number(value)):
                variants.append(number)
    unique = {(type(value), repr(value)): value for value in variants}  # 1, 1.0 and True stay apart
    return [value for value in unique.values() if not (_kind(value) == "number" and abs(value) > _SAFE)]


def _kind(value: Any) -> str:
    return (
        "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__
    )


@st.composite
def seeded_rules(draw: st.DrawFn, contacts: list[dict[str, Any]], depth: int = 3) -> Any:
    """A segment rule (canonical form) whose literals are often the contacts' values.

    Random literals seldom meet random contacts (``5 == "5"`` needs a contact with 5 in the very
    field a rule compares with "5"), so the literal operands of a comparison or ``in`` are
    replaced, one time in two, by one of :func:`contact_values` of the field it names.  If that
    makes the rule invalid (a string where a number must be), replacements keep to the literal's
    own kind; failing that, the rule stays as drawn.
    """
    rule = validate_segment_rule(draw(raw_segment_rules(depth)))
    pools = contact_values(contacts)

    def seed(node: Any, pool: list[Any], same_kind: bool) -> Any:
        if isinstance(node, list):
            return [seed(item, pool, same_kind) for item in node]
        if isinstance(node, dict):
            ((op, args),) = node.items()
            if op in ("var", "missing", "missing_some"):
                return node
            fields = [arg["var"] for arg in args if isinstance(arg, dict) and "var" in arg]
            if op not in _COMPARISONS or not fields:
                return {op: seed(args, [], same_kind)}
            name = fields[0] if isinstance(fields[0], str) else fields[0][0]  # {"var": [name, default]}
            return {op: seed(args, pools.get(name, []), same_kind)}
        if not pool or not draw(st.booleans()):
            return node
        fitting = [value for value in pool if not same_kind or _kind(value) == _kind(node)]
        return draw(st.sampled_from(fitting)) if fitting else node

    for same_kind in (False, True):
        try:
            return validate_segment_rule(seed(rule, [], same_kind))
        except RuleValidationError:
            pass
    return rule

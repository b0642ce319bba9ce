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
  (``{"!": x}``) or with ``var`` in its list forms, which validation normalises.

Entry points: :func:`raw_segment_rules` (what a user might send), :func:`segment_rules` (the same,
through ``validate_segment_rule``: the canonical form the compilers see) and :func:`snapshots` (host
contact snapshots as :func:`~contact_segments.service.snapshots.load_snapshot` accepts them, with
ISO-8601 timestamps placed on and around the instants the rules compare with).

The values lean on what JavaScript makes awkward and SQL makes easy to get wrong: null, ``""``,
``[]``, numeric strings (``" 2 "``, ``"1e3"``, ``"0x10"``, ``""``), ``-0``, booleans against numbers,
case and LIKE wildcards in substrings, characters outside the BMP, custom fields of every scalar
type or absent, and timestamps exactly at ``now - N``.  Strings hold what both a snapshot and a rule
may hold: no NUL, no lone surrogate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from contact_segments.rules.catalog import STRING_FIELDS, STRING_LIST_FIELDS, TIMESTAMP_FIELDS
from contact_segments.rules.validation import validate_segment_rule

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

TAGS: list[str] = ["vip", "VIP", "promotion", "lead", "", "1", "a😀b", "a,b", "%"]
CHANNELS: list[str] = ["whatsapp", "WhatsApp", "email", "sms", ""]
CUSTOM_KEYS: list[str] = ["score", "plan", "vip", "n"]

NUMBERS: list[int | float] = [
    0, 1, -1, 2, 3, 5, 7, 10, 16, 20, 1000, 0.5, -1.5, 1.5, 2.5, 0.1, 1e-7, 1e16, 1e21, 123.456,
    2**53 - 1, -(2**53 - 1),
]  # fmt: skip
"""Numbers for custom fields and rule literals."""

_SAFE = 2**53 - 1
_text_alphabet = st.characters(codec="utf-8", exclude_characters="\x00")  # what snapshots and rules allow

strings: SearchStrategy[str] = st.one_of(
    st.sampled_from(STRINGS), st.sampled_from(STRINGS), st.text(_text_alphabet, max_size=4)
)
numbers: SearchStrategy[int | float] = st.one_of(
    st.sampled_from(NUMBERS),
    st.sampled_from(NUMBERS),
    st.integers(-1_000, 1_000),
    st.integers(-_SAFE, _SAFE),
    st.floats(allow_nan=False, allow_infinity=False),
)
custom_values: SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), numbers, strings, st.sampled_from([0, 1, "", "0", "1", "5", " 5 ", True, False])
)
custom_literals: SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), numbers, strings, st.sampled_from([0, 1, "", "5", True])
)
time_numbers: SearchStrategy[int | float] = st.one_of(
    st.sampled_from(ABSOLUTE_TIMES),
    st.sampled_from(ABSOLUTE_TIMES),
    st.integers(T0 - 40 * 86_400, T0 + 40 * 86_400),
    st.floats(-1e10, 1e10),
)

# ----------------------------------------------------------------------------- rules


def _choose(*options: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """One of ``options``, each as likely (list one twice to double its weight).

    ``st.one_of`` flattens the ``one_of``s nested in it and picks among all their branches, which
    would let the option with the most alternatives crowd out the others.
    """
    return st.sampled_from(options).flatmap(lambda option: option)


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


string_names = st.sampled_from(STRING_FIELDS)
list_names = st.sampled_from(STRING_LIST_FIELDS)
timestamp_names = st.sampled_from(TIMESTAMP_FIELDS)
custom_names = st.sampled_from([f"custom_fields.{key}" for key in CUSTOM_KEYS])
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
    element = st.one_of(st.sampled_from(TAGS + CHANNELS), strings)
    in_list = st.tuples(element, list_vars).map(lambda t: {"in": list(t)})
    substring = st.tuples(strings, st.one_of(string_vars, custom_vars)).map(lambda t: {"in": list(t)})
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


_GUARDS = [
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


def snapshots(now: float) -> SearchStrategy[dict[str, Any]]:
    """One host contact snapshot (without ``id`` and ``version``): every field, nulls and empties included."""
    string_value = st.one_of(st.none(), st.just(""), strings)
    return st.fixed_dictionaries(
        {
            **dict.fromkeys(STRING_FIELDS, string_value),
            "tags": st.lists(st.one_of(st.sampled_from(TAGS), strings), max_size=3, unique=True),
            "channels": st.lists(st.sampled_from(CHANNELS), max_size=2, unique=True),
            **dict.fromkeys(TIMESTAMP_FIELDS, timestamps(now)),
            "custom_fields": st.fixed_dictionaries({}, optional=dict.fromkeys(CUSTOM_KEYS, custom_values)),
        }
    )


def contact_sets(now: float, max_size: int = 8) -> SearchStrategy[list[dict[str, Any]]]:
    """Snapshots with ids ``c0``, ``c1``, ... and version 1."""
    return st.lists(snapshots(now), min_size=1, max_size=max_size).map(
        lambda items: [{"id": f"c{i}", "version": 1, **item} for i, item in enumerate(items)]
    )

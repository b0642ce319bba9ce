"""The SQL compiler means what the Python predicate means, on SQLite and on PostgreSQL.

DESIGN.md, "The rules: one meaning, two compilers", point 5: for generated segment rules and
contact sets (nulls, empty strings, empty lists, numeric strings, custom fields of every scalar
type or absent, timestamps exactly at ``now - N``), the contacts that
``rule_to_sql(rule, contact_view_columns(), now=now)`` selects are the contacts whose evaluation
view ``compile_predicate(rule)`` holds for, and ``count(*)`` agrees.  Both sides read the same
stored rows: the Python predicate gets the views :func:`load_contact_views` returns.  The SQL
condition must also be two-valued (never NULL), which its module promises and ``NOT`` relies on.

Each Hypothesis example stores a few contacts in a workspace of its own and checks a batch of rules
against them (their literals often taken from those very contacts: ``seeded_rules``), then every
condition inside those rules on its own, all in one statement; it runs in the one migrated
database the ``engine`` fixture gives the test function, and deletes its rows afterwards.  The
default run is ``DEFAULT_EXAMPLES`` examples per backend (20-30 s each on a busy 2-core machine);
ask for more with ``SEGMENTS_SQL_EXAMPLES=2000`` or ``HYPOTHESIS_PROFILE=long``
(``LONG_EXAMPLES``).

Below the property test: regressions for the semantics that are easy to get wrong, and the check
that a time-relative rule is an index range scan.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Dialect, Double, Engine, Select, Table, bindparam, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from contact_segments.rules import compile_predicate
from contact_segments.rules.sql import InstantRequired, rule_to_sql
from contact_segments.rules.validation import validate_segment_rule
from contact_segments.service.snapshots import load_snapshot
from contact_segments.storage import (
    Contact,
    Workspace,
    contact_view_columns,
    ensure_workspace,
    load_contact_views,
    make_session_factory,
    upsert_contacts,
)
from tests.support.segment_strategies import NOWS, T0, contact_sets, iso, raw_segment_rules, seeded_rules

DEFAULT_EXAMPLES = 100
LONG_EXAMPLES = 1_000
EXAMPLES = int(
    os.environ.get(
        "SEGMENTS_SQL_EXAMPLES",
        LONG_EXAMPLES if os.environ.get("HYPOTHESIS_PROFILE") == "long" else DEFAULT_EXAMPLES,
    )
)
RULES_PER_EXAMPLE = 12

NOW_PARAMETER = bindparam("now", type_=Double())
"""``now`` as SQL: a condition compiled with it holds at whatever instant the statement is given."""

CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
WORKSPACES: Table = Workspace.__table__  # type: ignore[assignment]
DAY = 86_400


# --------------------------------------------------------------------------- the harness


@dataclass(frozen=True)
class Outcome:
    """What each side made of one rule over one workspace's contacts."""

    python: set[str]
    sql: set[str]  # SELECT id ... WHERE condition
    sql_count: int  # count(*) ... WHERE condition
    sql_values: dict[str, Any]  # SELECT id, condition ...: every row's value of the condition
    statement: Select[Any]
    dialect: Dialect

    def sql_text(self) -> str:
        compiled = self.statement.compile(dialect=self.dialect)
        return f"{compiled} {compiled.params}"


class Harness:
    """Stores contact sets in workspaces of their own and evaluates rules over them both ways."""

    _workspace_numbers = itertools.count()

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions: sessionmaker[Session] = make_session_factory(engine)
        self.columns = contact_view_columns()

    def store(self, snapshots: Sequence[dict[str, Any]], *, now: float) -> str:
        """A new workspace holding the snapshots (validated as the service would); its id."""
        workspace_id = f"w{next(self._workspace_numbers)}"
        with self.sessions.begin() as session:
            ensure_workspace(session, workspace_id, name=workspace_id, now=now)
            upsert_contacts(session, workspace_id, [load_snapshot(s) for s in snapshots], now=now)
        return workspace_id

    def drop(self, workspace_id: str) -> None:
        with self.sessions.begin() as session:
            session.execute(delete(CONTACTS).where(CONTACTS.c.workspace_id == workspace_id))
            session.execute(delete(WORKSPACES).where(WORKSPACES.c.id == workspace_id))

    @contextmanager
    def workspace(self, snapshots: Sequence[dict[str, Any]], *, now: float) -> Iterator[str]:
        workspace_id = self.store(snapshots, now=now)
        try:
            yield workspace_id
        finally:
            self.drop(workspace_id)

    def views(self, session: Session, workspace_id: str) -> dict[str, Any]:
        ids = session.scalars(select(CONTACTS.c.id).where(CONTACTS.c.workspace_id == workspace_id)).all()
        return dict(load_contact_views(session, workspace_id, ids))

    def evaluate(
        self, session: Session, workspace_id: str, views: dict[str, Any], rule: Any, *, now: float
    ) -> Outcome:
        predicate = compile_predicate(rule)
        python = {cid for cid, view in views.items() if predicate({**view, "now": now})}
        condition = rule_to_sql(rule, self.columns, now=now)
        scope = CONTACTS.c.workspace_id == workspace_id
        # The condition in WHERE (the ids, and count(*) as member counts take it), and in the
        # SELECT list, where SQLite evaluates both sides of every AND and OR and a NULL shows.
        selected = select(CONTACTS.c.id).where(scope, condition)
        counted = select(func.count()).select_from(CONTACTS).where(scope, condition)
        return Outcome(
            python=python,
            sql=set(session.scalars(selected)),
            sql_count=session.scalar(counted) or 0,
            sql_values=dict(session.execute(select(CONTACTS.c.id, condition).where(scope)).tuples().all()),
            statement=selected,
            dialect=session.get_bind().dialect,
        )

    def evaluate_parts(
        self,
        session: Session,
        workspace_id: str,
        views: dict[str, Any],
        rules: list[Any],
        *,
        now: float,
        now_in_sql: bool = False,
    ) -> list[tuple[Any, Outcome]]:
        """Every condition inside the rules (each ``and``, ``!``, comparison, ...) on its own.

        A wrong leaf deep in a rule is often masked by the rest of it; checked on its own, it shows.
        All of them go in one statement, a column each (the SELECT-list context, where SQLite
        computes both sides of every AND and OR), so this costs one query per example.

        ``now_in_sql``: compile each part with ``now`` a bound parameter (:data:`NOW_PARAMETER`),
        and run the statement with ``now`` as its value.
        """
        parts = list({_json(part): part for rule in rules for part in _parts(rule)}.values())
        conditions = [rule_to_sql(part, self.columns, now=NOW_PARAMETER if now_in_sql else now) for part in parts]
        scope = CONTACTS.c.workspace_id == workspace_id
        statement = select(CONTACTS.c.id, *(c.label(f"c{i}") for i, c in enumerate(conditions))).where(scope)
        rows = session.execute(statement, {"now": now} if now_in_sql else {}).all()
        outcomes = []
        for index, (part, condition) in enumerate(zip(parts, conditions, strict=True)):
            predicate = compile_predicate(part)
            values = {row[0]: row[index + 1] for row in rows}
            selected = {cid for cid, value in values.items() if value}
            outcome = Outcome(
                python={cid for cid, view in views.items() if predicate({**view, "now": now})},
                sql=selected,
                sql_count=len(selected),
                sql_values=values,
                statement=select(CONTACTS.c.id, condition).where(scope),
                dialect=session.get_bind().dialect,
            )
            outcomes.append((part, outcome))
        return outcomes

    def members(self, snapshots: Sequence[dict[str, Any]], rule: Any, *, now: float) -> Outcome:
        """One rule over one contact set, checked for agreement; the outcome, for more asserts."""
        with self.workspace(snapshots, now=now) as workspace_id, self.sessions() as session:
            views = self.views(session, workspace_id)
            outcome = self.evaluate(session, workspace_id, views, rule, now=now)
            assert_agree(rule, now, views, outcome)
            return outcome


_CONNECTIVES = frozenset({"and", "or", "!", "!!", "if"})


def _parts(rule: Any) -> Iterator[Any]:
    """The conditions inside a (canonical) rule, innermost first, the rule itself last."""
    if isinstance(rule, dict):
        ((op, args),) = rule.items()
        if op in _CONNECTIVES:
            for arg in args:
                yield from _parts(arg)
    yield rule


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)


def assert_agree(rule: Any, now: float, views: dict[str, Any], outcome: Outcome) -> None:
    """SQL and Python select the same contacts; the SQL condition is TRUE or FALSE on every row."""
    unknown = {cid: value for cid, value in outcome.sql_values.items() if value not in (True, False)}
    from_values = {cid for cid, value in outcome.sql_values.items() if value}
    problems = []
    if unknown:
        problems.append(f"the SQL condition is neither TRUE nor FALSE for {unknown}")
    if outcome.sql != outcome.python:
        problems.append("SQL and Python select different contacts")
    if outcome.sql_count != len(outcome.python):
        problems.append(f"count(*) is {outcome.sql_count}, Python counts {len(outcome.python)}")
    if from_values != outcome.sql:
        problems.append("SELECT condition and WHERE condition disagree")
    if not problems:
        return
    lines = [*problems, f"  rule: {_json(rule)}", f"  now:  {now!r}"]
    for cid in sorted(outcome.sql ^ outcome.python | set(unknown)):
        lines.append(
            f"  {cid}: python={cid in outcome.python} sql={outcome.sql_values.get(cid)!r} "
            f"view={_json(views.get(cid))}"
        )
    lines.append(f"  SQL: {outcome.sql_text()}")
    raise AssertionError("\n".join(lines))


@pytest.fixture
def harness(engine: Engine) -> Harness:
    return Harness(engine)


# --------------------------------------------------------------------------- the property


@st.composite
def examples(draw: st.DrawFn) -> tuple[float, list[dict[str, Any]], list[Any]]:
    now = draw(st.sampled_from(NOWS))
    contacts = draw(contact_sets(now))
    # Leaves and shallow rules show a wrong leaf (deep ones often mask it); deep ones nest logic.
    rule = st.one_of(
        seeded_rules(contacts, depth=0), seeded_rules(contacts, depth=1), seeded_rules(contacts, depth=3)
    )
    rules = draw(st.lists(rule, min_size=4, max_size=RULES_PER_EXAMPLE))
    return now, contacts, rules


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    # One database per test function, shared by its examples (each in a workspace of its own).
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(example=examples())
def test_sql_selects_what_the_python_predicate_selects(
    harness: Harness, example: tuple[float, list[dict[str, Any]], list[Any]]
) -> None:
    now, contacts, rules = example
    with harness.workspace(contacts, now=now) as workspace_id, harness.sessions() as session:
        views = harness.views(session, workspace_id)
        for rule in rules:
            note(f"rule: {_json(rule)}")
            assert_agree(rule, now, views, harness.evaluate(session, workspace_id, views, rule, now=now))
        for part, outcome in harness.evaluate_parts(session, workspace_id, views, rules, now=now):
            assert_agree(part, now, views, outcome)


@settings(
    max_examples=EXAMPLES // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(example=examples())
def test_with_now_in_sql_one_condition_selects_right_at_every_instant(
    harness: Harness, example: tuple[float, list[dict[str, Any]], list[Any]]
) -> None:
    """``rule_to_sql(..., now=<a bound parameter>)``: every valid rule compiles so (none raises
    InstantRequired), and the condition, compiled without knowing the instant, selects what the
    Python predicate selects at the instant the contacts were made around and at the others."""
    now, contacts, rules = example
    with harness.workspace(contacts, now=now) as workspace_id, harness.sessions() as session:
        views = harness.views(session, workspace_id)
        for instant in [now, *(n for n in NOWS if n != now)]:
            parts = harness.evaluate_parts(session, workspace_id, views, rules, now=instant, now_in_sql=True)
            for part, outcome in parts:
                assert_agree(part, instant, views, outcome)


@pytest.mark.parametrize(
    "rule",
    [
        {"==": [{"var": "now"}, 5]},  # equality folds on the value
        {"<": [{"var": "now"}, 5]},  # so does a comparison with a constant
        {"!!": [{"var": "now"}]},  # and truthiness
        {"in": [{"var": "now"}, [1, 2]]},
        {"<": [{"var": "created_at"}, {"-": [5, {"var": "now"}]}]},  # not now - N
        {"<": [{"var": "created_at"}, {"-": [{"var": "now"}, 1e300]}]},  # beyond what now in SQL takes
        {"in": [[[{"var": "now"}]], {"var": "email"}]},  # a clock deep in a list
        {"<": [{"var": "created_at"}, {"+": [[{"var": "now"}], 5]}]},
    ],
)
def test_rules_that_need_the_instant_say_so_with_now_in_sql(rule: Any) -> None:
    """Outside what segment rules allow, a use of ``now`` that only its value can fold raises
    InstantRequired with ``now`` in SQL; given the instant, the same rule compiles."""
    with pytest.raises(InstantRequired):
        rule_to_sql(rule, contact_view_columns(), now=NOW_PARAMETER)
    rule_to_sql(rule, contact_view_columns(), now=T0)


@settings(max_examples=200, deadline=None)
@given(rule=raw_segment_rules())
def test_generated_rules_are_valid_segment_rules(rule: Any) -> None:
    """The strategy follows the validator's grammar: every rule it makes validates, and stays
    valid (and unchanged) when validated again in canonical form."""
    canonical = validate_segment_rule(rule)
    assert validate_segment_rule(canonical) == canonical


# --------------------------------------------------------------------------- regressions

NOW = T0 + 0.25
"""The instant the regressions are evaluated at (a fractional one: thresholds are not whole)."""


def _contact(**fields: Any) -> dict[str, Any]:
    """A snapshot's fields; ``custom`` gives the custom fields, and timestamps are epoch seconds."""
    snapshot: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "custom":
            snapshot["custom_fields"] = value
        elif name in ("created_at", "last_incoming_message_at", "last_outgoing_message_at"):
            snapshot[name] = None if value is None else iso(value)
        else:
            snapshot[name] = value
    return snapshot


def _n(value: Any) -> dict[str, Any]:
    """A contact whose custom field ``n`` holds ``value``."""
    return _contact(custom={"n": value})


ABSENT = _contact(custom={})  # no custom field n at all
N = {"var": "custom_fields.n"}
CREATED = {"var": "created_at"}
WEEK_AGO = {"-": [{"var": "now"}, 7 * DAY]}


@dataclass(frozen=True)
class Case:
    """A rule, contacts by id, and the ids JavaScript says the rule matches."""

    rule: Any
    contacts: dict[str, dict[str, Any]]
    members: set[str]


REGRESSIONS: dict[str, Case] = {
    # JavaScript compares null as 0: a contact without the field is "less than 5".
    "null is less than a positive number": Case(
        {"<": [N, 5]},
        {"absent": ABSENT, "null": _n(None), "seven": _n(7), "three": _n("3"), "abc": _n("abc"),
         "true": _n(True), "empty": _n("")},
        {"absent", "null", "three", "true", "empty"},
    ),
    "null is greater than a negative number": Case({">": [N, -1]}, {"absent": ABSENT, "neg": _n(-2)}, {"absent"}),
    "null is between -5 and 5": Case({"<": [-5, N, 5]}, {"absent": ABSENT, "null": _n(None)}, {"absent", "null"}),
    "a null timestamp is long ago, unless guarded with !!": Case(
        {"or": [
            {"<": [{"var": "last_incoming_message_at"}, {"-": [{"var": "now"}, 30 * DAY]}]},
            {"and": [{"!!": [CREATED]}, {"<": [CREATED, {"-": [{"var": "now"}, 30 * DAY]}]}]},
        ]},
        {"never": _contact(last_incoming_message_at=None),
         "old": _contact(last_incoming_message_at=NOW - 31 * DAY),
         "recent": _contact(last_incoming_message_at=NOW - DAY),
         "created old": _contact(last_incoming_message_at=NOW, created_at=NOW - 31 * DAY),
         "created never": _contact(last_incoming_message_at=NOW, created_at=None)},
        {"never", "old", "created old"},
    ),
    # Loose equality converts strings to numbers (trimmed; hex, exponents; "" is 0), not null.
    "custom field == 5": Case(
        {"==": [N, 5]},
        {"5": _n(5), "'5'": _n("5"), "' 5 '": _n(" 5 "), "'0x5'": _n("0x5"), "'5.0'": _n("5.0"), "'5e0'": _n("5e0"),
         "'five'": _n("five"), "null": _n(None), "true": _n(True), "5.5": _n(5.5)},
        {"5", "'5'", "' 5 '", "'0x5'", "'5.0'", "'5e0'"},
    ),
    "custom field === 5": Case({"===": [N, 5]}, {"5": _n(5), "5.0": _n(5.0), "'5'": _n("5")}, {"5", "5.0"}),
    "=== and in never convert": Case(
        {"or": [{"===": [N, 1]}, {"in": [N, [0, "x"]]}]},
        {"1": _n(1), "0": _n(0), "true": _n(True), "false": _n(False), "'1'": _n("1"), "'0'": _n("0")},
        {"1", "0"},
    ),
    "custom field == 0": Case(
        {"==": [0, N]},
        {"''": _n(""), "' '": _n(" "), "'0'": _n("0"), "'-0'": _n("-0"), "false": _n(False), "0": _n(0),
         "null": _n(None), "absent": ABSENT, "'a'": _n("a")},
        {"''", "' '", "'0'", "'-0'", "false", "0"},
    ),
    "custom field == true": Case(
        {"==": [N, True]},
        {"1": _n(1), "'1'": _n("1"), "true": _n(True), "'true'": _n("true"), "2": _n(2), "false": _n(False)},
        {"1", "'1'", "true"},
    ),
    "custom field == null": Case(
        {"==": [N, None]},
        {"null": _n(None), "absent": ABSENT, "0": _n(0), "''": _n(""), "false": _n(False)},
        {"null", "absent"},
    ),
    "custom field != null": Case({"!=": [N, None]}, {"null": _n(None), "absent": ABSENT, "0": _n(0)}, {"0"}),
    "Unicode digits are not numbers": Case(
        {"==": [N, 3]}, {"arabic": _n("\u0663"), "fullwidth": _n("\uff13"), "ascii": _n("3")}, {"ascii"}
    ),
    "huge integers compare as doubles": Case(
        {"==": [N, 9007199254740991]},
        {"max safe": _n(2**53 - 1), "text": _n("9007199254740991"), "text above": _n("9007199254740993")},
        {"max safe", "text"},
    ),
    "the extremes of doubles survive JSON storage": Case(
        {">": [N, 0]},
        {"smallest": _n(5e-324), "largest": _n(1.7976931348623157e308), "-0": _n(-0.0), "-smallest": _n(-5e-324)},
        {"smallest", "largest"},
    ),
    "string equality is exact": Case(
        {"or": [{"==": [{"var": "country"}, "MY"]}, {"in": [{"var": "country"}, ["SG", "x"]]}]},
        {"MY": _contact(country="MY"), "my": _contact(country="my"), "' MY'": _contact(country=" MY"),
         "SG": _contact(country="SG"), "null": _contact(country=None)},
        {"MY", "SG"},
    ),
    # Truthiness: "" is falsy, "0" and " " are not; [] is falsy, [""] is not.
    "!! of a string field": Case(
        {"!!": [{"var": "country"}]},
        {"''": _contact(country=""), "null": _contact(country=None), "'0'": _contact(country="0"),
         "' '": _contact(country=" "), "'false'": _contact(country="false")},
        {"'0'", "' '", "'false'"},
    ),
    "! of a custom field": Case(
        {"!": [N]},
        {"''": _n(""), "0": _n(0), "-0": _n(-0.0), "false": _n(False), "null": _n(None), "absent": ABSENT,
         "'0'": _n("0"), "'false'": _n("false"), "0.5": _n(0.5)},
        {"''", "0", "-0", "false", "null", "absent"},
    ),
    "!! of tags": Case(
        {"!!": [{"var": "tags"}]}, {"none": _contact(tags=[]), "empty tag": _contact(tags=[""])}, {"empty tag"}
    ),
    "missing counts null and empty strings": Case(
        {"missing": ["country", "custom_fields.n"]},
        {"both": _contact(country="MY", custom={"n": 0}), "''": _contact(country="", custom={"n": 0}),
         "n null": _contact(country="MY", custom={"n": None}), "n absent": _contact(country="MY")},
        {"''", "n null", "n absent"},
    ),
    "missing_some needs that many present": Case(
        {"missing_some": [2, ["country", "language", "email"]]},
        {"two": _contact(country="MY", language="ms"), "one": _contact(country="MY", language=""),
         "none": _contact()},
        {"one", "none"},
    ),
    # Tags: exact, case-sensitive membership of whole elements.
    "tag membership": Case(
        {"in": ["vip", {"var": "tags"}]},
        {"vip": _contact(tags=["vip"]), "VIP": _contact(tags=["VIP"]), "vip2": _contact(tags=["vip2"]),
         "second": _contact(tags=["a", "vip"]), "none": _contact(tags=[])},
        {"vip", "second"},
    ),
    "the empty tag": Case({"in": ["", {"var": "tags"}]}, {"''": _contact(tags=[""]), "a": _contact(tags=["a"])}, {"''"}),
    "a tag with a comma is one tag": Case(
        {"in": ["a,b", {"var": "tags"}]}, {"one": _contact(tags=["a,b"]), "two": _contact(tags=["a", "b"])}, {"one"}
    ),
    "channel membership": Case(
        {"in": ["whatsapp", {"var": "channels"}]},
        {"yes": _contact(channels=["sms", "whatsapp"]), "case": _contact(channels=["WhatsApp"])},
        {"yes"},
    ),
    # Substrings: case-sensitive (LIKE is not, on SQLite), wildcards are plain characters.
    "substring is case-sensitive": Case(
        {"in": ["acme", {"var": "email"}]},
        {"lower": _contact(email="ann@acme.com"), "upper": _contact(email="Bob@ACME.com"), "''": _contact(email=""),
         "null": _contact(email=None)},
        {"lower"},
    ),
    "substring wildcards are literal": Case(
        {"or": [{"in": ["_", {"var": "email"}]}, {"in": ["%", {"var": "first_name"}]}]},
        {"underscore": _contact(email="a_b"), "plain": _contact(email="ab", first_name="x"),
         "percent": _contact(first_name="100%")},
        {"underscore", "percent"},
    ),
    "the empty substring is in every non-empty string": Case(
        {"in": ["", {"var": "email"}]}, {"x": _contact(email="x"), "''": _contact(email=""), "null": _contact()}, {"x"}
    ),
    "substring of a custom field is only for strings": Case(
        {"in": ["5", N]}, {"'15'": _n("15"), "15": _n(15), "true": _n(True), "'x'": _n("x")}, {"'15'"}
    ),
    "substring outside the BMP": Case(
        {"in": ["😀", {"var": "last_name"}]}, {"yes": _contact(last_name="a😀b"), "no": _contact(last_name="ab")}, {"yes"}
    ),
    # Between: strict and inclusive ends.
    "between excludes its ends": Case(
        {"<": [10, N, 20]},
        {"10": _n(10), "10.5": _n(10.5), "20": _n(20), "'15'": _n("15"), "null": _n(None), "true": _n(True)},
        {"10.5", "'15'"},
    ),
    "between-or-equal includes its ends": Case(
        {"<=": [10, N, 20]},
        {"10": _n(10), "20": _n(20), "'20'": _n("20"), "20.000001": _n(20.000001), "9.99": _n(9.99)},
        {"10", "20", "'20'"},
    ),
    "created in the last week, both ends included": Case(
        {"<=": [WEEK_AGO, CREATED, {"var": "now"}]},
        {"week ago": _contact(created_at=NOW - 7 * DAY), "now": _contact(created_at=NOW),
         "future": _contact(created_at=NOW + 1), "too old": _contact(created_at=NOW - 7 * DAY - 0.5),
         "never": _contact(created_at=None)},
        {"week ago", "now"},
    ),
    # now ± N: the threshold itself.
    "created after now - 7 days: the threshold is out": Case(
        {">": [CREATED, WEEK_AGO]},
        {"at": _contact(created_at=NOW - 7 * DAY), "just after": _contact(created_at=NOW - 7 * DAY + 0.000001),
         "after": _contact(created_at=NOW - 7 * DAY + 0.5), "before": _contact(created_at=NOW - 7 * DAY - 1),
         "never": _contact(created_at=None)},
        {"just after", "after"},
    ),
    "created at or after now - 7 days: the threshold is in": Case(
        {">=": [CREATED, WEEK_AGO]},
        {"at": _contact(created_at=NOW - 7 * DAY), "before": _contact(created_at=NOW - 7 * DAY - 0.000001)},
        {"at"},
    ),
    "threshold on the left, now + N": Case(
        {">": [{"+": [{"var": "now"}, 60]}, {"var": "last_outgoing_message_at"}]},
        {"at": _contact(last_outgoing_message_at=NOW + 60), "before": _contact(last_outgoing_message_at=NOW + 59.5),
         "never": _contact(last_outgoing_message_at=None)},
        {"before", "never"},
    ),
    # A guard ({"!!": T}) lets the rest of its "and" ignore null T (rules/sql.py, _conjuncts); only
    # there: negated, or beside the same comparison unguarded, null T still counts as 0.
    "a guard covers only its own and": Case(
        {"or": [
            {"!": {"and": [{"var": "last_incoming_message_at"}, {"<": [{"var": "last_incoming_message_at"}, NOW]}]}},
            {"and": [{"!": {"missing": "email"}}, {"<": [{"var": "created_at"}, NOW]},
                     {"!!": [{"var": "created_at"}]}, {"in": ["@", {"var": "email"}]}]},
        ]},
        {"never wrote": _contact(last_incoming_message_at=None, created_at=None, email=None),
         "wrote": _contact(last_incoming_message_at=NOW - 1, created_at=None, email="a@b"),
         "wrote, created": _contact(last_incoming_message_at=NOW - 1, created_at=NOW - 1, email="a@b"),
         "wrote, created, no @": _contact(last_incoming_message_at=NOW - 1, created_at=NOW - 1, email="ab")},
        {"never wrote", "wrote, created"},
    ),
    "a negated field is no guard": Case(
        {"and": [{"!": [{"var": "created_at"}]}, {"<": [{"var": "created_at"}, NOW]}]},
        {"never": _contact(created_at=None), "zero": _contact(created_at=0), "old": _contact(created_at=NOW - 1)},
        {"never", "zero"},
    ),
    # The bugs the property test found (see rules/sql.py, _JsonPart).
    "a numeric comparison of custom fields holding every type": Case(
        {"<=": [1, N, 10]},
        {"7": _n(7), "'7'": _n("7"), "true": _n(True), "false": _n(False), "'abc'": _n("abc"), "null": _n(None)},
        {"7", "'7'", "true"},
    ),
    "a custom boolean compared with a string": Case(
        {"==": [N, "1"]}, {"true": _n(True), "false": _n(False), "'1'": _n("1"), "1": _n(1)}, {"true", "'1'", "1"}
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_regression(harness: Harness, name: str) -> None:
    case = REGRESSIONS[name]
    rule = validate_segment_rule(case.rule)
    snapshots = [{"id": cid, "version": 1, **fields} for cid, fields in case.contacts.items()]
    outcome = harness.members(snapshots, rule, now=NOW)  # SQL and Python agree...
    assert outcome.python == case.members  # ...and say what JavaScript says


@pytest.mark.parametrize("number", [1e300, -1.4162217920978019e63, 1.7976931348623157e308])
def test_big_floats_keep_their_value_through_storage(
    harness: Harness, backend: str, request: pytest.FixtureRequest, number: float
) -> None:
    """A custom field holding a float of 2**53 or more equals that float, as JavaScript says.

    On PostgreSQL, JSONB prints such a float without a fraction (1e300 as 1 and 300 zeros) and
    psycopg loads that as a Python int, 10**300, which is not the double 1e300: the Python
    predicate then compares the int exactly and says no, where SQL (a double) and JavaScript say
    yes.  ``load_contact_views`` should give custom-field numbers back as JavaScript reads them
    (an integer beyond 2**53 as the nearest float).
    """
    if backend == "postgresql":
        request.applymarker(
            pytest.mark.xfail(reason="JSONB loads big floats as exact Python ints", strict=True)
        )
    snapshots = [{"id": "big", "version": 1, **_n(number)}, {"id": "other", "version": 1, **_n(1)}]
    assert harness.members(snapshots, {"==": [N, number]}, now=NOW).python == {"big"}


TINY = "0." + "0" * 400 + "1"  # 1e-401 written out: below the smallest double, so 0
HUGE = "1" + "0" * 400  # 1e400 written out: above the largest double, so Infinity
OUT_OF_RANGE = {
    "1e400": _n("1e400"), "-1e400": _n("-1e400"), "1e-400": _n("1e-400"), "tiny": _n(TINY), "huge": _n(HUGE)
}  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "members"),
    [
        ({"<": [N, 1]}, {"-1e400", "1e-400", "tiny"}),
        ({"==": [N, 0]}, {"1e-400", "tiny"}),
        ({">": [N, 1e300]}, {"1e400", "huge"}),
    ],
)
def test_numeric_strings_beyond_the_range_of_doubles(
    harness: Harness, backend: str, request: pytest.FixtureRequest, rule: Any, members: set[str]
) -> None:
    """Number("1e400") is Infinity and Number("1e-400") is 0 in JavaScript; SQL must not fail on
    them (PostgreSQL's cast raises out of range; ``js_number`` in migration 0001 maps it)."""
    snapshots = [{"id": cid, "version": 1, **fields} for cid, fields in OUT_OF_RANGE.items()]
    assert harness.members(snapshots, rule, now=NOW).python == members


# --------------------------------------------------------------------------- index use

DEFAULT_RULES = {
    entry["key"]: entry["rule"]
    for entry in json.loads(files("contact_segments").joinpath("fixtures/default_segments.json").read_text())[
        "segments"
    ]
}

#: Time-relative rules, the index that should serve each, and the bound its scan should have.
TIME_RULES = {
    "created > now - 7 days": ({">": [CREATED, WEEK_AGO]}, "created_at", ">"),
    "default: created <7 days ago": (DEFAULT_RULES["created_last_7_days"], "created_at", ">"),
    # {"!!": T} AND {"<": [T, now - N]}: the guard lets the comparison drop JavaScript's null < x.
    "default: inactive >30 days": (DEFAULT_RULES["inactive_30_days"], "last_incoming_message_at", "<"),
}


def _populate(harness: Harness, workspace_id: str, contacts: int) -> None:
    """Contacts created and last writing over the last year, in this workspace and another one."""
    rows = [
        {
            "id": f"c{n:05d}",
            "version": 1,
            "created_at": NOW - (n % 365) * DAY - n % 3_600,
            "last_incoming_message_at": None if n % 3 == 0 else NOW - (n % 90) * DAY,
        }
        for n in range(contacts)
    ]
    with harness.sessions.begin() as session:
        for workspace in (workspace_id, "other"):
            ensure_workspace(session, workspace, name=workspace, now=NOW)
            upsert_contacts(session, workspace, rows, now=NOW)


def _members_query(harness: Harness, rule: Any, workspace_id: str) -> str:
    """The SQL selecting the rule's contacts, values inlined (as EXPLAIN takes no parameters)."""
    condition = rule_to_sql(validate_segment_rule(rule), harness.columns, now=NOW)
    statement = select(CONTACTS.c.id).where(CONTACTS.c.workspace_id == workspace_id, condition)
    return str(statement.compile(harness.engine, compile_kwargs={"literal_binds": True}))


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_time_relative_rules_are_index_range_scans_on_postgresql(harness: Harness) -> None:
    _populate(harness, "ws", 5_000)
    with harness.sessions.begin() as session:
        connection = session.connection()
        connection.exec_driver_sql("ANALYZE contacts")
        # The table is small and one workspace holds half of it, so the planner may prefer a
        # sequential scan; with it switched off (in this transaction only), the plan shows whether
        # the condition can bound an index scan on the timestamp (a Filter line would not do).
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        for name, (rule, column, bound) in TIME_RULES.items():
            query = _members_query(harness, rule, "ws")
            plan = "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {query}"))
            conditions = [line for line in plan.splitlines() if "Index Cond" in line]
            assert f"ix_contacts_workspace_id_{column}" in plan, f"{name}:\n{plan}"
            assert any(f"{column} {bound}" in line for line in conditions), f"{name}:\n{plan}"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_time_relative_rules_are_index_range_scans_on_sqlite(harness: Harness) -> None:
    _populate(harness, "ws", 500)
    with harness.sessions() as session:
        for name, (rule, column, bound) in TIME_RULES.items():
            query = _members_query(harness, rule, "ws")
            plan = " ".join(
                row[-1] for row in session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {query}")
            )
            # e.g. "SEARCH contacts USING INDEX ix_..._created_at (workspace_id=? AND created_at>?)"
            scan = rf"USING INDEX ix_contacts_workspace_id_{column} \(workspace_id=\? AND [^)]*\b{column}{bound}\?"
            assert re.search(scan, plan), f"{name}: {plan}"

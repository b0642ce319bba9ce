"""The SQL compiler means what the Python predicate means, on SQLite and on PostgreSQL.

DESIGN.md, "The rules: one meaning, two compilers", point 5: for generated segment rules and
contact sets (nulls, empty strings, empty lists, numeric strings, custom fields of every scalar
type or absent, timestamps exactly at ``now - N``), the contacts that
``rule_to_sql(rule, contact_view_columns(), now=now)`` selects are the contacts whose evaluation
view ``compile_predicate(rule)`` holds for, and ``count(*)`` agrees.  Both sides read the same
stored rows: the Python predicate gets the views :func:`load_contact_views` returns.  The SQL
condition must also be two-valued (never NULL), which its module promises and ``NOT`` relies on.

Each Hypothesis example stores a few contacts in a workspace of its own and checks a batch of rules
against them, in the one migrated database the ``engine`` fixture gives the test function; the
rows are deleted afterwards.  The default run is ``DEFAULT_EXAMPLES`` examples per backend (about
half a minute each on the CI machine); ask for more with ``SEGMENTS_SQL_EXAMPLES=2000`` or
``HYPOTHESIS_PROFILE=long`` (``LONG_EXAMPLES``).

Below the property test: regressions for the semantics that are easy to get wrong, and the check
that a time-relative rule is an index range scan.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, Table, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from contact_segments.rules import compile_predicate
from contact_segments.rules.sql import rule_to_sql
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
from tests.support.segment_strategies import NOWS, contact_sets, raw_segment_rules, segment_rules

DEFAULT_EXAMPLES = 60
LONG_EXAMPLES = 1_000
EXAMPLES = int(
    os.environ.get(
        "SEGMENTS_SQL_EXAMPLES",
        LONG_EXAMPLES if os.environ.get("HYPOTHESIS_PROFILE") == "long" else DEFAULT_EXAMPLES,
    )
)
RULES_PER_EXAMPLE = 12

CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
WORKSPACES: Table = Workspace.__table__  # type: ignore[assignment]
DAY = 86_400


# --------------------------------------------------------------------------- the harness


@dataclass(frozen=True)
class Outcome:
    """What each side made of one rule over one workspace's contacts."""

    python: set[str]
    sql: set[str]  # SELECT id ... WHERE condition
    sql_count: int  # SELECT count(*) ... WHERE condition
    sql_values: dict[str, Any]  # SELECT id, condition ...: every row's value of the condition
    statement: str


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
        selected = select(CONTACTS.c.id).where(scope, condition)
        return Outcome(
            python=python,
            sql=set(session.scalars(selected)),
            sql_count=session.scalar(select(func.count()).select_from(CONTACTS).where(scope, condition)) or 0,
            sql_values=dict(session.execute(select(CONTACTS.c.id, condition).where(scope)).tuples().all()),
            statement=str(selected.compile(session.get_bind(), compile_kwargs={"literal_binds": False})),
        )

    def members(self, snapshots: Sequence[dict[str, Any]], rule: Any, *, now: float) -> Outcome:
        """One rule over one contact set, checked for agreement; the outcome, for more asserts."""
        with self.workspace(snapshots, now=now) as workspace_id, self.sessions() as session:
            views = self.views(session, workspace_id)
            outcome = self.evaluate(session, workspace_id, views, rule, now=now)
            assert_agree(rule, now, views, outcome)
            return outcome


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
    lines.append(f"  SQL: {outcome.statement}")
    raise AssertionError("\n".join(lines))


@pytest.fixture
def harness(engine: Engine) -> Harness:
    return Harness(engine)


# --------------------------------------------------------------------------- the property


@st.composite
def examples(draw: st.DrawFn) -> tuple[float, list[dict[str, Any]], list[Any]]:
    now = draw(st.sampled_from(NOWS))
    contacts = draw(contact_sets(now))
    rules = draw(st.lists(segment_rules(), min_size=1, max_size=RULES_PER_EXAMPLE))
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


@settings(max_examples=300, deadline=None)
@given(rule=raw_segment_rules())
def test_generated_rules_are_valid_segment_rules(rule: Any) -> None:
    """The strategy follows the validator's grammar: every rule it makes validates, and stays
    valid (and unchanged) when validated again in canonical form."""
    canonical = validate_segment_rule(rule)
    assert validate_segment_rule(canonical) == canonical

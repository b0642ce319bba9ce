"""The tick (and an incremental rebuild) finds flip candidates with an index range scan, not a scan of all contacts."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from contact_segments.service import RuleInput, UnitOfWork, create_segment, tick
from contact_segments.service.membership import compiled_segment, flip_candidates
from contact_segments.storage import Segment, ensure_workspace, setwise, upsert_contacts

DAY = 86_400.0
NOW = 1_780_000_000.0


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_tick_window_query_uses_the_timestamp_index(engine: Engine, session_factory) -> None:
    with session_factory() as session:
        _populate(session, contacts=20_000)
        session.execute(text("ANALYZE contacts"))
        session.commit()
    rule = {">": [{"var": "created_at"}, {"-": [{"var": "now"}, 7 * DAY]}]}
    create_segment(UnitOfWork(session_factory), "ws", name="recent", rule=RuleInput(rule=rule), now=NOW)
    tick(UnitOfWork(session_factory), "ws", now=NOW)  # the first: the watermark is set
    results = []
    sent = _executed(engine, lambda: results.append(tick(UnitOfWork(session_factory), "ws", now=NOW + DAY)))
    assert results[0].candidates > 0  # contacts turned 7 days old in the day
    (compared,) = [(sql, parameters) for sql, parameters in sent if "compared" in sql]  # the tick's comparison and writes
    window = flip_candidates(compiled_segment(_segment(rule)), NOW, NOW + DAY)
    statements = {
        "the tick's comparison of the window's contacts": compared,
        "an incremental rebuild's count of them": _literal(engine, setwise.count_matching_query("ws", window)),
    }
    with session_factory() as session:
        for what, (sql, parameters) in statements.items():
            plan = "\n".join(session.connection().exec_driver_sql(f"EXPLAIN {sql}", parameters).scalars())
            # With real statistics the planner picks the range scan by itself; no enable_seqscan=off.
            assert "ix_contacts_workspace_id_created_at" in plan, (what, plan)
            # (The exits join the flips to the memberships' primary key; how is the planner's
            # choice: a nested loop on the key at real sizes, a hash of this test's few rows.)
            assert "Seq Scan on contacts" not in plan, (what, plan)


def _literal(engine: Engine, query) -> tuple[str, None]:
    return str(query.compile(engine, compile_kwargs={"literal_binds": True})), None


def _executed(engine: Engine, run) -> list[tuple[str, dict]]:
    """The statements ``run`` sends, each with its parameters."""
    sent: list[tuple[str, dict]] = []

    def capture(connection, cursor, statement, parameters, context, executemany) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return sent


def _segment(rule: dict) -> Segment:
    return Segment(id=1, workspace_id="ws", name="s", rule=rule, rule_version=1)


def _populate(session: Session, *, contacts: int) -> None:
    ensure_workspace(session, "ws", name="ws", now=NOW)
    rows = [
        {"id": f"c{n:06d}", "version": 1, "created_at": NOW - (n % 365) * DAY - n % 86_400} for n in range(contacts)
    ]
    upsert_contacts(session, "ws", rows, now=NOW)
    session.commit()

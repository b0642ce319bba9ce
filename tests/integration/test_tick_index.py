"""The tick (and an incremental rebuild) finds flip candidates with an index range scan, not a scan of all contacts."""

from __future__ import annotations

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from contact_segments.rules import rule_to_sql
from contact_segments.service.membership import compiled_segment, flip_candidates
from contact_segments.storage import Segment, contact_view_columns, ensure_workspace, setwise, upsert_contacts

DAY = 86_400.0
NOW = 1_780_000_000.0


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_tick_window_query_uses_the_timestamp_index(session_factory) -> None:
    with session_factory() as session:
        _populate(session, contacts=20_000)
        session.execute(text("ANALYZE contacts"))
        rule = {">": [{"var": "created_at"}, {"-": [{"var": "now"}, 7 * DAY]}]}
        window = flip_candidates(compiled_segment(_segment(rule)), NOW, NOW + 60)
        condition = rule_to_sql(rule, contact_view_columns(), now=NOW + 60)
        statements = {
            "the tick's comparison of the window's contacts": _executed(
                session, lambda: setwise.window_flips(session, "ws", [setwise.Window(1, condition, among=window)])
            ),
            "an incremental rebuild's count of them": _literal(session, setwise.count_matching_query("ws", window)),
        }
        for what, (sql, parameters) in statements.items():
            plan = "\n".join(session.connection().exec_driver_sql(f"EXPLAIN {sql}", parameters).scalars())
            # With real statistics the planner picks the range scan by itself; no enable_seqscan=off.
            assert "ix_contacts_workspace_id_created_at" in plan, (what, plan)
            assert "Seq Scan" not in plan, (what, plan)


def _literal(session: Session, query) -> tuple[str, None]:
    return str(query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})), None


def _executed(session: Session, run) -> tuple[str, dict]:
    """The one statement ``run`` sends, with its parameters."""
    sent: list[tuple[str, dict]] = []

    def capture(connection, cursor, statement, parameters, context, executemany) -> None:
        sent.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    (statement,) = sent
    return statement


def _segment(rule: dict) -> Segment:
    return Segment(id=1, workspace_id="ws", name="s", rule=rule, rule_version=1)


def _populate(session: Session, *, contacts: int) -> None:
    ensure_workspace(session, "ws", name="ws", now=NOW)
    rows = [
        {"id": f"c{n:06d}", "version": 1, "created_at": NOW - (n % 365) * DAY - n % 86_400} for n in range(contacts)
    ]
    upsert_contacts(session, "ws", rows, now=NOW)
    session.commit()

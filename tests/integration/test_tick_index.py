"""The tick (and an incremental rebuild) finds flip candidates with an index range scan, not a scan of all contacts."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from contact_segments.service.membership import compiled_segment, flip_candidates
from contact_segments.storage import Segment, ensure_workspace, setwise, upsert_contacts
from contact_segments.storage.queries import contact_views_where_query

DAY = 86_400.0
NOW = 1_780_000_000.0


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_tick_window_query_uses_the_timestamp_index(session_factory) -> None:
    with session_factory() as session:
        _populate(session, contacts=20_000)
        session.execute(text("ANALYZE contacts"))
        created_recently = compiled_segment(_segment({">": [{"var": "created_at"}, {"-": [{"var": "now"}, 7 * DAY]}]}))
        window = flip_candidates(created_recently, NOW, NOW + 60)
        queries = {
            "the tick's read of the candidates": contact_views_where_query("ws", window, member_of=1),
            "an incremental rebuild's count of them": setwise.count_matching_query("ws", window),
        }
        for what, query in queries.items():
            compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
            plan = "\n".join(session.scalars(text(f"EXPLAIN {compiled}")))
            # With real statistics the planner picks the range scan by itself; no enable_seqscan=off.
            assert "ix_contacts_workspace_id_created_at" in plan, (what, plan)
            assert "Seq Scan" not in plan, (what, plan)


def _segment(rule: dict) -> Segment:
    return Segment(id=1, workspace_id="ws", name="s", rule=rule, rule_version=1)


def _populate(session: Session, *, contacts: int) -> None:
    ensure_workspace(session, "ws", name="ws", now=NOW)
    rows = [
        {"id": f"c{n:06d}", "version": 1, "created_at": NOW - (n % 365) * DAY - n % 86_400} for n in range(contacts)
    ]
    upsert_contacts(session, "ws", rows, now=NOW)
    session.commit()

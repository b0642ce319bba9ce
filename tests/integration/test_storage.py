"""contact_segments.storage on SQLite and PostgreSQL: schema, upserts, limits, cascades, the outbox."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, delete, event, func, inspect, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from contact_segments.storage import (
    CONTACT_VIEW_FIELDS,
    MAX_SEGMENTS_PER_WORKSPACE,
    TRACKED_FIELDS,
    Base,
    Contact,
    DefaultRegistryEntry,
    EventCause,
    EventKind,
    Membership,
    MembershipEvent,
    NewEvent,
    PendingChange,
    Segment,
    Workspace,
    add_memberships,
    alembic_config,
    append_events,
    claim_defaults,
    claim_segment_slot,
    contact_versions,
    current_revision,
    database_url_from_env,
    delete_contacts,
    downgrade,
    ensure_workspace,
    fetch_undelivered_events,
    head_revision,
    is_duplicate_segment_name,
    iter_member_ids,
    link_default_segment,
    list_events,
    load_contact_views,
    make_engine,
    make_session_factory,
    mark_events_delivered,
    member_counts,
    memberships_of,
    migrate,
    normalize_url,
    open_tick_window,
    pending_changes,
    record_failed_delivery,
    release_segment_slot,
    remove_memberships,
    request_delivery,
    seeded_defaults,
    segment_name_taken,
    setwise,
    take_delivery_request,
    tombstone_versions,
    try_lock_delivery,
    upsert_contacts,
    workspaces_with_undelivered_events,
)
from contact_segments.storage.ids import uuid7_sql
from tests.support.ids import assert_uuid7_between
from tests.support.locks import waiting_on_locks

NOW = 1_750_000_000.0
WS = "ws-1"
TABLES = {"workspaces", "contacts", "segments", "memberships", "membership_events", "default_registry"}
RULE = {"!!": [{"var": "country"}]}
CLOCKS_APART_MS = 1000
"""How far the database server's clock may be from this process's (the same machine's here)."""
POSTGRESQL_ONLY = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


class LimitReached(Exception):
    pass


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        ensure_workspace(session, WS, name="Workspace one", now=NOW)
        session.commit()
        yield session


def create_segment(session: Session, name: str, *, workspace_id: str = WS) -> Segment:
    """What the service does: take a slot, then insert (both in the caller's transaction)."""
    if claim_segment_slot(session, workspace_id) is None:
        raise LimitReached(workspace_id)
    segment = Segment(workspace_id=workspace_id, name=name, rule=RULE, created_at=NOW, updated_at=NOW)
    session.add(segment)
    session.flush()
    return segment


def entered(segment_id: int, contact_id: str | None, **overrides: Any) -> NewEvent:
    event: NewEvent = {
        "workspace_id": WS,
        "segment_id": segment_id,
        "contact_id": contact_id,
        "kind": EventKind.ENTERED,
        "cause": EventCause.CONTACT_CHANGED,
        "rule_version": 1,
        "occurred_at": NOW,
    }
    return cast(NewEvent, {**event, **overrides})


def warm_engine(db_url: str, *, connections: int) -> Engine:
    """An engine with ``connections`` already open, so threads start their transactions together."""
    engine = make_engine(db_url, pool_size=connections)
    opened = [engine.connect() for _ in range(connections)]
    for connection in opened:
        connection.close()  # back to the pool, still connected
    return engine


def run_concurrently(count: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` in ``count`` threads released together; return each result or exception."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except Exception as error:  # the caller inspects it
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


# --- engine and migrations --------------------------------------------------------------------


def test_database_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMENTS_DATABASE_URL", raising=False)
    assert database_url_from_env() == "sqlite:///segments.db"
    monkeypatch.setenv("SEGMENTS_DATABASE_URL", "postgresql://u@h/db")
    assert database_url_from_env() == "postgresql://u@h/db"


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"])
def test_postgresql_urls_use_psycopg_3(url: str) -> None:
    assert normalize_url(url).drivername == "postgresql+psycopg"


def test_sqlite_connections_are_configured(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert pragma("PRAGMA busy_timeout").scalar() == 10_000
    engine.dispose()


def test_migrations_upgrade_downgrade_and_upgrade_again(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    assert current_revision(engine) is None

    migrate(blank_db_url)  # a URL works as well as an engine
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) >= TABLES

    downgrade(engine)
    assert current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}

    migrate(engine)
    migrate(engine)  # already at head: a no-op
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_the_migrations_build_the_schema_the_models_describe(blank_db_url: str) -> None:
    """Alembic's comparison of the migrated database with the models finds nothing missing or
    extra: no table, column, index or constraint of a model without its migration.  (The GIN
    index on tags is PostgreSQL's alone.)"""
    engine = make_engine(blank_db_url)
    migrate(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    found = [(d[0], getattr(d[1], "name", None)) if isinstance(d, tuple) else repr(d) for d in differences]
    assert found == ([] if engine.dialect.name == "postgresql" else [("add_index", "ix_contacts_tags")])


def test_the_change_id_migration_gives_notifications_already_queued_an_id_each(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    with engine.connect() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0006")
        connection.commit()
    queued = "INSERT INTO segment_changes (workspace_id, segment_id, name, rule_version, change, occurred_at) VALUES "
    with engine.begin() as connection:
        connection.execute(text(queued + "('ws', 1, 'VIP', 1, 'created', 0), ('ws', 1, 'VIP', 2, 'edited', 1)"))
    migrate(engine)
    with engine.connect() as connection:
        ids = connection.execute(text("SELECT change_id FROM segment_changes ORDER BY seq")).scalars().all()
    assert len(ids) == 2 and len(set(ids)) == 2 and all(ids)
    with pytest.raises(IntegrityError), engine.begin() as connection:  # unique
        connection.execute(text(queued.replace("(workspace_id", "(change_id, workspace_id") + "(:id, 'ws', 1, 'VIP', 3, 'renamed', 2)"), {"id": ids[0]})
    with pytest.raises(IntegrityError), engine.begin() as connection:  # and never missing
        connection.execute(text(queued + "('ws', 1, 'VIP', 3, 'renamed', 2)"))
    if engine.dialect.name == "sqlite":  # the table SQLite rebuilt still never reuses a seq
        with engine.connect() as connection:
            table = connection.execute(text("SELECT sql FROM sqlite_master WHERE name = 'segment_changes'")).scalar()
        assert "AUTOINCREMENT" in table
    engine.dispose()


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    """Autogenerate finds nothing to do: models and migrations describe the same schema."""
    with engine.connect() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.check(config)


def test_concurrent_migrations_do_not_collide(blank_db_url: str) -> None:
    results = run_concurrently(4, lambda _: migrate(blank_db_url))
    assert results == [None] * 4
    assert current_revision(blank_db_url) == head_revision()


def test_postgresql_indexes_tags_with_gin(engine: Engine, backend: str) -> None:
    indexes = {index["name"]: index for index in inspect(engine).get_indexes("contacts")}
    for column in ("created_at", "last_incoming_message_at", "last_outgoing_message_at"):
        assert indexes[f"ix_contacts_workspace_id_{column}"]["column_names"] == ["workspace_id", column]
    if backend == "postgresql":
        assert indexes["ix_contacts_tags"]["dialect_options"]["postgresql_using"] == "gin"
    else:
        assert "ix_contacts_tags" not in indexes


# --- contacts ---------------------------------------------------------------------------------


def snapshot(contact_id: str, version: int, **fields: Any) -> dict[str, Any]:
    return {"id": contact_id, "version": version, **fields}


def test_upsert_stores_only_newer_versions(session: Session) -> None:
    assert upsert_contacts(session, WS, [snapshot("c1", 2, country="MY")], now=NOW) == ["c1"]
    assert upsert_contacts(session, WS, [snapshot("c1", 2, country="SG")], now=NOW) == []  # duplicate
    assert upsert_contacts(session, WS, [snapshot("c1", 1, country="SG")], now=NOW) == []  # stale
    assert load_contact_views(session, WS, ["c1"])["c1"]["country"] == "MY"

    assert upsert_contacts(session, WS, [snapshot("c1", 3, country="SG")], now=NOW + 1) == ["c1"]
    stored = session.get_one(Contact, (WS, "c1"))
    session.refresh(stored)
    assert (stored.country, stored.version, stored.updated_at) == ("SG", 3, NOW + 1)


def test_upsert_replaces_the_whole_snapshot(session: Session) -> None:
    upsert_contacts(session, WS, [snapshot("c1", 1, country="MY", tags=["vip"], language="ms")], now=NOW)
    upsert_contacts(session, WS, [snapshot("c1", 2, country="MY")], now=NOW)
    view = load_contact_views(session, WS, ["c1"])["c1"]
    assert (view["tags"], view["language"]) == ([], None)


def test_upsert_batch_keeps_the_newest_version_of_each_id(session: Session) -> None:
    batch = [snapshot("c1", 1, country="A"), snapshot("c1", 3, country="C"), snapshot("c1", 2, country="B")]
    assert upsert_contacts(session, WS, batch, now=NOW) == ["c1"]
    assert load_contact_views(session, WS, ["c1"])["c1"]["country"] == "C"


def test_upsert_thousands_in_one_call(session: Session) -> None:
    first = [snapshot(f"c{i:05}", 1, tags=["t"]) for i in range(3000)]
    assert sorted(upsert_contacts(session, WS, first, now=NOW)) == [row["id"] for row in first]

    second = [snapshot(f"c{i:05}", 1 + i % 2) for i in range(3000)]  # every odd one is newer
    stored = upsert_contacts(session, WS, second, now=NOW)
    assert sorted(stored) == [f"c{i:05}" for i in range(1, 3000, 2)]
    assert contact_versions(session, WS, ["c00000", "c00001", "missing"]) == {"c00000": 1, "c00001": 2}


def test_concurrent_upserts_leave_the_newest_version(session: Session, db_url: str) -> None:
    engine = warm_engine(db_url, connections=20)
    sessions = make_session_factory(engine)

    def store(version: int) -> list[str]:
        with sessions.begin() as own:
            return upsert_contacts(own, WS, [snapshot("c1", version, country=f"v{version}")], now=NOW)

    run_concurrently(20, lambda index: store(1 + (index * 7) % 20))  # versions 1..20, shuffled
    engine.dispose()
    stored = session.get_one(Contact, (WS, "c1"))
    assert (stored.version, stored.country) == (20, "v20")


def test_upsert_rejects_unknown_fields(session: Session) -> None:
    with pytest.raises(ValueError, match="tag"):
        upsert_contacts(session, WS, [snapshot("c1", 1, tag=["oops"])], now=NOW)


def test_contact_views_have_every_view_field(session: Session) -> None:
    full = snapshot(
        "c1",
        1,
        first_name="Aisyah",
        last_name="Rahman",
        email="a@example.com",
        phone="+60123",
        country="MY",
        language="ms",
        lifecycle="customer",
        assignee="agent-7",
        conversation_status="open",
        last_interacted_channel="whatsapp",
        channels=["whatsapp", "email"],
        tags=["vip", "promotion"],
        created_at=NOW / 3 + 0.1,  # every bit of a double survives the trip
        last_incoming_message_at=NOW - 60,
        last_outgoing_message_at=None,
        custom_fields={"plan": "gold", "seats": 3, "trial": False, "score": 1.5, "note": None},
    )
    upsert_contacts(session, WS, [full, snapshot("c2", 1)], now=NOW)
    views = load_contact_views(session, WS, ["c1", "c2", "missing"])

    assert set(views) == {"c1", "c2"}
    expected = {key: value for key, value in full.items() if key != "version"}
    assert views["c1"] == expected
    assert list(views["c1"]) == list(CONTACT_VIEW_FIELDS)
    assert views["c2"] == dict.fromkeys(CONTACT_VIEW_FIELDS) | {
        "id": "c2",
        "tags": [],
        "channels": [],
        "custom_fields": {},
    }
    assert load_contact_views(session, "other-workspace", ["c1"]) == {}
    # Just the fields asked for (what the rules to evaluate read), the id always.
    narrow = load_contact_views(session, WS, ["c1"], fields={"tags", "custom_fields"})
    assert narrow == {"c1": {"id": "c1", "tags": ["vip", "promotion"], "custom_fields": expected["custom_fields"]}}
    with pytest.raises(ValueError, match="custom_fields.plan"):  # a rule's name for a field, not the view's
        load_contact_views(session, WS, ["c1"], fields={"custom_fields.plan"})


@pytest.mark.parametrize(
    "tags",
    [
        [],
        ["a"],
        ["promotion", "VIP", "vip"],
        ["ünïcödé", "标签", "emoji 🎉"],
        ["", " ", "with,comma", 'with "quotes"', "back\\slash", "{braces}", "NULL", "null", "[1]"],
    ],
)
def test_string_lists_round_trip(session: Session, backend: str, tags: list[str]) -> None:
    upsert_contacts(session, WS, [snapshot("c1", 1, tags=tags, channels=tags[::-1])], now=NOW)
    session.commit()
    view = load_contact_views(session, WS, ["c1"])["c1"]
    assert (view["tags"], view["channels"]) == (tags, tags[::-1])

    stored_as = {
        "postgresql": ("SELECT pg_typeof(tags)::text FROM contacts", "text[]"),
        "sqlite": ("SELECT typeof(tags) || ' ' || json_valid(tags) FROM contacts", "text 1"),
    }
    query, expected = stored_as[backend]
    assert session.execute(text(query)).scalar() == expected


def pending(session: Session) -> dict[str, frozenset[str]]:
    rows = session.execute(select(PendingChange.contact_id, PendingChange.mask))
    return {contact_id: pending_changes.fields_of(mask) for contact_id, mask in rows}


def test_the_upsert_marks_the_fields_it_changed_as_pending(session: Session) -> None:
    upsert_contacts(session, WS, [snapshot("c1", 1, tags=["a"])], now=NOW)
    assert pending(session) == {"c1": frozenset(TRACKED_FIELDS)}  # new: everything
    assert pending_changes.take(session, WS) == {"c1": frozenset(TRACKED_FIELDS)}
    assert pending(session) == {}

    upsert_contacts(session, WS, [snapshot("c1", 2, tags=["a", "b"])], now=NOW)
    upsert_contacts(session, WS, [snapshot("c1", 3, tags=["a", "b"], country="MY")], now=NOW)
    upsert_contacts(session, WS, [snapshot("c1", 1, email="stale@example.com")], now=NOW)
    assert pending(session) == {"c1": frozenset({"tags", "country"})}  # accumulated; the stale one ignored

    upsert_contacts(session, WS, [snapshot("c1", 4, tags=["a", "b"], country="MY", custom_fields={"k": 1})], now=NOW)
    assert pending_changes.take(session, WS) == {"c1": frozenset({"tags", "country", "custom_fields"})}


def test_take_returns_at_most_the_limit_in_id_order(session: Session) -> None:
    upsert_contacts(session, WS, [snapshot(f"c{n}", 1) for n in range(5)], now=NOW)
    assert list(pending_changes.take(session, WS, limit=3)) == ["c0", "c1", "c2"]
    assert list(pending_changes.take(session, WS, limit=3)) == ["c3", "c4"]
    assert pending_changes.workspaces_with_pending(session) == []


def test_delete_contacts_returns_the_ids_that_existed(session: Session) -> None:
    upsert_contacts(session, WS, [snapshot("c1", 1), snapshot("c2", 1)], now=NOW)
    assert delete_contacts(session, WS, ["c1", "nope"], now=NOW) == ["c1"]
    assert delete_contacts(session, WS, ["c1"], now=NOW) == []
    assert set(load_contact_views(session, WS, ["c1", "c2"])) == {"c2"}


def test_a_deleted_contact_comes_back_only_with_a_newer_snapshot(session: Session) -> None:
    upsert_contacts(session, WS, [snapshot("c1", 5), snapshot("c2", 1)], now=NOW)
    delete_contacts(session, WS, ["c1"], now=NOW)
    assert tombstone_versions(session, WS, ["c1", "c2"]) == {"c1": 5}

    assert upsert_contacts(session, WS, [snapshot("c1", 4), snapshot("c1", 5)], now=NOW) == []  # stale, duplicate
    assert load_contact_views(session, WS, ["c1"]) == {}
    assert upsert_contacts(session, WS, [snapshot("c1", 6, country="MY")], now=NOW) == ["c1"]  # restored in the host
    assert load_contact_views(session, WS, ["c1"])["c1"]["country"] == "MY"

    delete_contacts(session, WS, ["c1"], now=NOW + 1)  # deleted again: the tombstone moves on
    assert tombstone_versions(session, WS, ["c1"]) == {"c1": 6}
    assert upsert_contacts(session, WS, [snapshot("c1", 6)], now=NOW) == []
    assert upsert_contacts(session, "elsewhere", [], now=NOW) == []


# --- memberships ------------------------------------------------------------------------------


def test_memberships_report_what_actually_changed(session: Session) -> None:
    a, b = create_segment(session, "A").id, create_segment(session, "B").id

    assert add_memberships(session, WS, [(a, "c1"), (a, "c2"), (b, "c1")], since=NOW) == [
        (a, "c1"),
        (a, "c2"),
        (b, "c1"),
    ]
    assert add_memberships(session, WS, [(a, "c1"), (b, "c2")], since=NOW) == [(b, "c2")]
    assert memberships_of(session, WS, ["c1", "c2", "c3"]) == {"c1": {a, b}, "c2": {a, b}}
    assert member_counts(session, WS) == {a: 2, b: 2}

    assert sorted(remove_memberships(session, [(a, "c1"), (a, "c3")])) == [(a, "c1")]
    assert remove_memberships(session, [(a, "c1")]) == []
    assert member_counts(session, WS) == {a: 1, b: 2}


def test_concurrent_adds_of_a_membership_report_it_once(session: Session, db_url: str) -> None:
    segment_id = create_segment(session, "A").id
    session.commit()
    engine = warm_engine(db_url, connections=10)
    sessions = make_session_factory(engine)

    def add(_: int) -> list[tuple[int, str]]:
        with sessions.begin() as own:
            return add_memberships(own, WS, [(segment_id, "c1")], since=NOW)

    results = run_concurrently(10, add)
    engine.dispose()
    assert sorted(map(str, results)) == [str([(segment_id, "c1")])] + ["[]"] * 9


@POSTGRESQL_ONLY
def test_a_diff_entering_a_membership_another_writer_adds_meanwhile_reports_nothing(session: Session, db_url: str) -> None:
    """The diff starts while another transaction holds the membership uncommitted: its INSERT
    waits on the key, fails when that one commits, and its statement runs again with ON
    CONFLICT DO NOTHING (:func:`setwise._insert_optimistically`): no entry, no event, no error."""
    segment_id = create_segment(session, "A").id
    session.commit()
    engine = make_engine(db_url, connect_args={"application_name": "diff_race"})
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    stamp = setwise.EventStamp("contact_changed", NOW, {segment_id: 1})
    outcome: list[object] = []

    def enter() -> None:
        try:
            with make_session_factory(engine).begin() as own:
                outcome.append(setwise.write_membership_diff(own, WS, [(segment_id, "c1")], [], since=NOW, events=stamp))
        except BaseException as error:  # reported below
            outcome.append(error)

    other_engine = make_engine(db_url)
    other = make_session_factory(other_engine)()
    try:
        add_memberships(other, WS, [(segment_id, "c1")], since=NOW)
        other.flush()
        racer = threading.Thread(target=enter)
        racer.start()
        assert waiting_on_locks(other_engine, "diff_race") == 1  # the diff's INSERT waits for the other writer
        other.commit()
        racer.join(timeout=30)
    finally:
        other.close()
        other_engine.dispose()
        engine.dispose()

    assert outcome == [([], [])]
    assert any("ON CONFLICT" in statement for statement in statements)  # the second attempt
    assert session.scalar(select(func.count()).select_from(MembershipEvent).where(MembershipEvent.workspace_id == WS)) == 0
    assert memberships_of(session, WS, ["c1"]) == {"c1": {segment_id}}


def test_a_membership_diff_writes_and_reports_only_what_changed(session: Session) -> None:
    """Pairs to enter that are members already and pairs to exit that are not members (what an
    evaluation gives for a contact whose memberships stay as they are) change nothing and get
    no event."""
    a, b = create_segment(session, "A").id, create_segment(session, "B").id
    add_memberships(session, WS, [(a, "c1"), (b, "c2")], since=NOW)
    stamp = setwise.EventStamp("contact_changed", NOW, {a: 3, b: 4})
    statements: list[str] = []
    bind = session.connection().engine
    capture = lambda *args: statements.append(args[2])  # noqa: E731 (before_cursor_execute's statement)
    event.listen(bind, "before_cursor_execute", capture)
    try:
        entered, exited = setwise.write_membership_diff(
            session, WS, [(a, "c1"), (a, "c2"), (b, "c1")], [(b, "c2"), (b, "c3")], since=NOW, events=stamp
        )
    finally:
        event.remove(bind, "before_cursor_execute", capture)

    assert (entered, exited) == ([(a, "c2"), (b, "c1")], [(b, "c2")])
    if bind.dialect.name == "postgresql":  # one statement: the member is skipped, not a reason to retry
        assert [s for s in statements if "INSERT INTO memberships" in s and "ON CONFLICT" not in s] != []
        assert not any("ON CONFLICT" in s or "ROLLBACK" in s for s in statements)
    assert memberships_of(session, WS, ["c1", "c2", "c3"]) == {"c1": {a, b}, "c2": {a}}
    events = session.execute(
        select(MembershipEvent.contact_id, MembershipEvent.segment_id, MembershipEvent.kind, MembershipEvent.rule_version)
        .where(MembershipEvent.workspace_id == WS)
        .order_by(MembershipEvent.seq)
    ).all()
    assert [tuple(e) for e in events] == [("c1", b, "entered", 4), ("c2", a, "entered", 3), ("c2", b, "exited", 4)]


def test_events_get_time_ordered_ids_whichever_statement_writes_them(session: Session) -> None:
    """Version 7 UUIDs, stamped with the clock, from the diff statement (made in SQL on
    PostgreSQL, in Python elsewhere) and from ``append_events`` (Python); a later statement's
    sort after an earlier one's."""
    a = create_segment(session, "A").id
    stamp = setwise.EventStamp("contact_changed", NOW, {a: 1})
    before = time.time_ns() // 1_000_000 - CLOCKS_APART_MS
    setwise.write_membership_diff(session, WS, [(a, f"c{i}") for i in range(300)], [], since=NOW, events=stamp)
    time.sleep(0.002)
    setwise.write_membership_diff(session, WS, [(a, "c300")], [], since=NOW, events=stamp)
    append_events(session, [NewEvent(workspace_id=WS, segment_id=a, contact_id="c1", kind="exited", cause="contact_changed", rule_version=1, occurred_at=NOW)])
    after = time.time_ns() // 1_000_000 + CLOCKS_APART_MS

    ids = list(session.scalars(select(MembershipEvent.event_id).order_by(MembershipEvent.seq)))
    assert len(ids) == len(set(ids)) == 302
    for event_id in ids:
        assert_uuid7_between(event_id, before, after)
    assert max(ids[:300]) < ids[300]  # one clock: the database's on PostgreSQL, ours elsewhere


@POSTGRESQL_ONLY
def test_uuid7_sql_makes_a_new_random_id_per_row(session: Session) -> None:
    before = time.time_ns() // 1_000_000 - CLOCKS_APART_MS
    ids = list(session.scalars(select(uuid7_sql()).select_from(func.generate_series(1, 1000))))
    after = time.time_ns() // 1_000_000 + CLOCKS_APART_MS

    assert len(set(ids)) == 1000
    assert len({made[:13] for made in ids}) == 1  # one statement, one instant
    assert len({made[15:18] for made in ids}) > 500  # the 12 random bits after the version vary
    for made in ids:
        assert_uuid7_between(made, before, after)


def test_members_stream_in_stable_batches(session: Session) -> None:
    segment_id = create_segment(session, "All").id
    ids = [f"c{i:04}" for i in range(2500)]
    add_memberships(session, WS, [(segment_id, contact_id) for contact_id in reversed(ids)], since=NOW)

    batches = list(iter_member_ids(session, segment_id, batch_size=1000))
    assert [len(batch) for batch in batches] == [1000, 1000, 500]
    assert [contact_id for batch in batches for contact_id in batch] == ids


# --- segments ---------------------------------------------------------------------------------


def test_names_compare_trimmed_and_casefolded(session: Session) -> None:
    segment = create_segment(session, "  VIP Straße ")
    assert segment.name_key == "vip strasse"
    assert segment_name_taken(session, WS, "vip STRASSE")
    assert not segment_name_taken(session, WS, "vip strasse", exclude_segment_id=segment.id)
    session.commit()

    with pytest.raises(IntegrityError) as caught:
        create_segment(session, "vip strasse")
    assert is_duplicate_segment_name(caught.value)
    session.rollback()

    create_segment(session, "VIP Straße", workspace_id=_other_workspace(session))  # other workspace: fine


def test_segment_ids_are_never_reused(session: Session) -> None:
    first = create_segment(session, "one")
    session.delete(first)
    session.flush()
    assert create_segment(session, "two").id > first.id


def test_segment_limit_is_enforced_by_the_database(session: Session) -> None:
    session.execute(update(Workspace).values(segment_count=MAX_SEGMENTS_PER_WORKSPACE - 1))
    assert claim_segment_slot(session, WS) == MAX_SEGMENTS_PER_WORKSPACE
    assert claim_segment_slot(session, WS) is None
    assert claim_segment_slot(session, "no-such-workspace") is None
    session.commit()

    with pytest.raises(IntegrityError):  # even a careless UPDATE cannot pass the limit
        session.execute(update(Workspace).values(segment_count=MAX_SEGMENTS_PER_WORKSPACE + 1))
    session.rollback()

    assert release_segment_slot(session, WS) == MAX_SEGMENTS_PER_WORKSPACE - 1
    session.execute(update(Workspace).values(segment_count=0))
    assert release_segment_slot(session, WS) is None


def _prefill_segments(session: Session, count: int) -> None:
    session.add_all(
        Segment(workspace_id=WS, name=f"s{i}", rule=RULE, created_at=NOW, updated_at=NOW)
        for i in range(count)
    )
    session.execute(update(Workspace).values(segment_count=count))
    session.commit()


def test_concurrent_creators_stop_at_exactly_the_limit(session: Session, db_url: str) -> None:
    _prefill_segments(session, MAX_SEGMENTS_PER_WORKSPACE - 10)
    engine = warm_engine(db_url, connections=20)
    sessions = make_session_factory(engine)

    def create(index: int) -> int:
        with sessions.begin() as own:
            return create_segment(own, f"new {index}").id

    results = run_concurrently(20, create)
    engine.dispose()

    assert sum(isinstance(result, int) for result in results) == 10
    assert all(isinstance(result, int | LimitReached) for result in results), results
    session.expire_all()
    assert session.scalar(select(Workspace.segment_count)) == MAX_SEGMENTS_PER_WORKSPACE
    assert session.scalar(select(func.count()).select_from(Segment)) == MAX_SEGMENTS_PER_WORKSPACE


def test_concurrent_creators_of_one_name_leave_one_segment(session: Session, db_url: str) -> None:
    engine = warm_engine(db_url, connections=20)
    sessions = make_session_factory(engine)
    spellings = ["VIP", "vip", " Vip ", "vIP\t"]

    def create(index: int) -> int:
        with sessions.begin() as own:
            return create_segment(own, spellings[index % len(spellings)]).id

    results = run_concurrently(20, create)
    engine.dispose()

    failures = [result for result in results if not isinstance(result, int)]
    assert len(failures) == 19
    assert all(isinstance(error, IntegrityError) and is_duplicate_segment_name(error) for error in failures)
    session.expire_all()
    assert session.scalar(select(Workspace.segment_count)) == 1  # the losers' slots rolled back too
    assert session.scalars(select(Segment.name_key)).all() == ["vip"]


# --- cascades ---------------------------------------------------------------------------------


def _populate(session: Session) -> tuple[int, int]:
    keep, doomed = create_segment(session, "keep").id, create_segment(session, "doomed").id
    upsert_contacts(session, WS, [snapshot("c1", 1)], now=NOW)
    add_memberships(session, WS, [(keep, "c1"), (doomed, "c1")], since=NOW)
    append_events(session, [entered(keep, "c1"), entered(doomed, "c1")])
    claim_defaults(session, WS, ["keep", "doomed"], registry_version=1)
    link_default_segment(session, WS, "keep", keep)
    link_default_segment(session, WS, "doomed", doomed)
    session.commit()
    return keep, doomed


def test_deleting_a_segment_takes_its_memberships_and_events(session: Session) -> None:
    keep, doomed = _populate(session)
    session.delete(session.get_one(Segment, doomed))
    session.commit()

    assert session.scalars(select(Membership.segment_id)).all() == [keep]
    assert session.scalars(select(MembershipEvent.segment_id)).all() == [keep]
    assert seeded_defaults(session, WS) == {"keep": keep, "doomed": None}  # the record stays


def test_deleting_a_workspace_takes_everything(session: Session) -> None:
    _populate(session)
    session.delete(session.get_one(Workspace, WS))
    session.commit()
    for model in (Contact, Segment, Membership, MembershipEvent, DefaultRegistryEntry):
        assert session.scalar(select(func.count()).select_from(model)) == 0, model


def test_foreign_keys_are_enforced(session: Session) -> None:
    with pytest.raises(IntegrityError):
        add_memberships(session, WS, [(12345, "c1")], since=NOW)


# --- the default registry ---------------------------------------------------------------------


def test_defaults_are_claimed_once(session: Session) -> None:
    assert claim_defaults(session, WS, ["a", "b", "a"], registry_version=1) == ["a", "b"]
    assert claim_defaults(session, WS, ["a", "b", "c"], registry_version=2) == ["c"]
    assert claim_defaults(session, WS, [], registry_version=2) == []
    assert seeded_defaults(session, WS) == {"a": None, "b": None, "c": None}
    registry_versions = session.execute(
        select(DefaultRegistryEntry.default_key, DefaultRegistryEntry.registry_version)
    ).tuples()
    assert dict(registry_versions.all()) == {"a": 1, "b": 1, "c": 2}


# --- the outbox -------------------------------------------------------------------------------


def test_events_keep_their_order(session: Session) -> None:
    segment_id = create_segment(session, "A").id
    exited = {"kind": EventKind.EXITED}
    ids = append_events(
        session, [entered(segment_id, f"c{i % 7}", **(exited if i % 2 else {})) for i in range(2500)]
    )
    session.commit()
    more = append_events(session, [entered(segment_id, "c1")])

    events = list_events(session, WS, limit=10_000)
    assert [event.event_id for event in events] == ids + more
    assert [event.seq for event in events] == sorted(event.seq for event in events)
    assert len(set(ids + more)) == 2501
    assert [event.kind for event in events[:3]] == ["entered", "exited", "entered"]
    assert [event.event_id for event in list_events(session, WS, after_event_id=ids[-1])] == more
    with pytest.raises(LookupError):
        list_events(session, WS, after_event_id="not-an-event")


def test_undelivered_events_are_fetched_in_order_until_delivered(session: Session) -> None:
    segment_id = create_segment(session, "A").id
    append_events(session, [entered(segment_id, f"c{i}") for i in range(5)])
    built = {"kind": EventKind.BUILT, "cause": EventCause.BUILT, "member_count": 5}
    append_events(session, [entered(segment_id, None, **built)])
    session.commit()

    pending = fetch_undelivered_events(session, WS, limit=3)
    assert [event.contact_id for event in pending] == ["c0", "c1", "c2"]
    record_failed_delivery(session, [event.seq for event in pending])
    mark_events_delivered(session, [pending[0].seq], now=NOW + 5)
    session.commit()

    pending = fetch_undelivered_events(session, WS)
    assert [event.contact_id for event in pending] == ["c1", "c2", "c3", "c4", None]
    assert [event.attempts for event in pending] == [1, 1, 0, 0, 0]
    assert (pending[-1].kind, pending[-1].member_count) == ("built", 5)
    assert fetch_undelivered_events(session, "other") == []
    assert workspaces_with_undelivered_events(session) == [WS]
    mark_events_delivered(session, [event.seq for event in pending], now=NOW + 6)
    assert workspaces_with_undelivered_events(session) == []


def test_only_built_events_have_no_contact(session: Session) -> None:
    segment_id = create_segment(session, "A").id
    with pytest.raises(IntegrityError):
        append_events(session, [entered(segment_id, None)])


@POSTGRESQL_ONLY  # SQLite serialises transactions
def test_a_fetch_for_delivery_locks_no_row(session: Session, session_factory: sessionmaker[Session]) -> None:
    """The workspace's one deliverer holds :func:`try_lock_delivery`; its fetch locks no row, so a
    deletion of fetched events (a segment's) never waits for the host the delivery is calling."""
    segment_id = create_segment(session, "A").id
    append_events(session, [entered(segment_id, f"c{i}") for i in range(10)])
    session.commit()

    with session_factory() as deliverer, session_factory() as other:
        fetched = [event.contact_id for event in fetch_undelivered_events(deliverer, WS, limit=4)]
        other.execute(text("SET LOCAL lock_timeout = '5s'"))  # a lock held would fail this, not hang it
        other.execute(delete(MembershipEvent).where(MembershipEvent.contact_id == "c0"))
        other.commit()
        deliverer.rollback()
    assert fetched == ["c0", "c1", "c2", "c3"]


# --- workspaces and ticks ---------------------------------------------------------------------


def _other_workspace(session: Session) -> str:
    ensure_workspace(session, "ws-2", name="Two", now=NOW)
    return "ws-2"


def test_ensure_workspace_is_idempotent(session: Session) -> None:
    assert not ensure_workspace(session, WS, name="renamed?", now=NOW + 1)
    assert ensure_workspace(session, "ws-2", name="Two", timezone="Asia/Kuala_Lumpur", now=NOW)
    workspace = session.get_one(Workspace, "ws-2")
    assert (workspace.name, workspace.timezone, workspace.segment_count) == ("Two", "Asia/Kuala_Lumpur", 0)
    assert session.get_one(Workspace, WS).name == "Workspace one"


def test_tick_windows_cover_time_once(session: Session) -> None:
    first = open_tick_window(session, WS, NOW)
    assert first is not None and (first.start, first.end) == (None, NOW)
    assert open_tick_window(session, WS, NOW) is None
    assert open_tick_window(session, WS, NOW - 60) is None
    later = open_tick_window(session, WS, NOW + 3 * 86400)
    assert later is not None and (later.start, later.end) == (NOW, NOW + 3 * 86400)
    assert open_tick_window(session, "no-such-workspace", NOW) is None


@POSTGRESQL_ONLY  # on SQLite a transaction excludes every other writer
def test_a_tick_window_waits_for_a_tick_in_progress_and_starts_where_it_ended(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as setup:
        ensure_workspace(setup, WS, name="Workspace one", now=NOW)
        assert open_tick_window(setup, WS, NOW) is not None
        setup.commit()
    results: dict[float, object] = {}
    with session_factory() as first:
        assert open_tick_window(first, WS, NOW + 60) is not None  # holds the workspace row

        def tick_at(at: float) -> None:
            with session_factory() as session:
                results[at] = open_tick_window(session, WS, at)
                session.commit()

        waiting = [threading.Thread(target=tick_at, args=(NOW + 60,)), threading.Thread(target=tick_at, args=(NOW + 120,))]
        for thread in waiting:
            thread.start()
        for thread in waiting:
            thread.join(timeout=0.5)
            assert thread.is_alive()  # blocked on the row
        first.commit()
    for thread in waiting:  # whichever goes first, the outcome is the same
        thread.join(timeout=10)
    assert results[NOW + 60] is None  # that instant was covered meanwhile
    later = results[NOW + 120]
    assert later is not None and (later.start, later.end) == (NOW + 60, NOW + 120)  # type: ignore[attr-defined]


def test_a_tick_window_reads_the_segments_after_the_watermark(session_factory: sessionmaker[Session]) -> None:
    """The window comes with the workspace's segments, oldest first (none when the instant was
    covered); on PostgreSQL they stay share-locked, so an edit (which locks its segment for
    update) waits for the tick."""
    with session_factory() as setup:
        ensure_workspace(setup, WS, name="Workspace one", now=NOW)
        a, b = create_segment(setup, "A"), create_segment(setup, "B")
        rows = [(a.id, a.rule_version, json.dumps(RULE)), (b.id, b.rule_version, json.dumps(RULE))]
        setup.commit()
    with session_factory() as ticking, session_factory() as editing:
        window = open_tick_window(ticking, WS, NOW)
        assert window is not None
        assert [(i, v, json.loads(r)) for i, v, r in window.segments] == [(i, v, json.loads(r)) for i, v, r in rows]
        if editing.get_bind().dialect.name == "postgresql":
            with pytest.raises(OperationalError, match="could not obtain lock"):
                editing.execute(select(Segment.id).where(Segment.id == a.id).with_for_update(nowait=True)).all()
        ticking.commit()
        assert open_tick_window(ticking, WS, NOW) is None


@POSTGRESQL_ONLY  # on SQLite the transaction itself excludes other deliverers
def test_one_deliverer_per_workspace(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as first, session_factory() as second:
        assert try_lock_delivery(first, WS)
        assert try_lock_delivery(first, WS)  # re-entrant within its transaction
        assert not try_lock_delivery(second, WS)
        assert try_lock_delivery(second, "ws-2")
        first.rollback()  # the lock ends with the transaction
        assert try_lock_delivery(second, WS)
        # Two ids whose 32-bit hashes collide (hashtext) still have a deliverer each: a request
        # left for one would otherwise wait on the other's deliverer, which never takes it.
        assert try_lock_delivery(first, "ws-186149")
        assert try_lock_delivery(second, "ws-99182")


@POSTGRESQL_ONLY  # on SQLite no delivery finds the lock taken, so none leaves a request
def test_a_delivery_request_is_taken_once(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        assert not take_delivery_request(session, WS)
        request_delivery(session, WS)
        request_delivery(session, WS)  # one request, however many deliveries leave it
        session.commit()
        assert not take_delivery_request(session, "ws-2")
        assert take_delivery_request(session, WS)
        assert not take_delivery_request(session, WS)

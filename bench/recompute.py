"""How fast does membership follow contacts, set-wise and one contact at a time? (PostgreSQL)

Over N generated contacts (``--contacts``, default 1,000,000; generated set-wise by one
``INSERT ... SELECT ... generate_series``) in one workspace with the five default segments,
this times, through the service:

* ``rebuild from empty`` - ``service.rebuild_segment`` (first build) of the five defaults, from
  no memberships at all.  Floor: per segment a hand-written ``INSERT INTO memberships ...
  SELECT id FROM contacts WHERE <same predicate>``, each committed; memberships are truncated
  before each run.
* ``incremental rebuild`` - ``service.rebuild_segment(incremental=True)`` of the five (with an
  event per change) after 1% of the contacts were changed in SQL, behind the service's back: only
  the database's change stamps know which.  Floor: ``SELECT count(*) FROM contacts WHERE <same
  predicate>``, summed over the five.
* ``full rebuild`` - the same after another 1% changed, but comparing every contact with the
  memberships (what the hourly sweep does to find drift); same floor.
* ``targeted`` - ``--changed`` (10,000) changed snapshots stored with
  ``service.store_snapshots`` (untimed), then ``service.evaluate_pending`` until it schedules
  no follow-up (timed), in contacts/s.  Floor: reading the same contacts' rows (the columns the
  five defaults read) and memberships by id, in batches of 1,000 as the service does (the
  service finds the memberships in its write instead of reading them; the floor stays what it
  was, a fixed yardstick).  Then, for
  information, the same with ``--evaluators`` (2) processes calling ``evaluate_pending`` at once,
  as one worker at ``--concurrency 2`` does (started before the clock; each takes its own
  batches, and each must have evaluated some); its floor reads the contacts in as many processes.
  Also for information, with the targeted figure, the same work hand-written: per batch of 1,000, the
  service's two share locks and then one statement that takes the pending rows, reads the
  contacts, compares them with the five predicates written by hand and writes the changed
  memberships and their events; no Python between.  That is how fast PostgreSQL itself does the
  work on this machine, in one connection: the service's rate over it is what the engine costs.

What changes (``--mix``, the same for the incremental and the targeted figure): ``typical``
(default): every changed contact gets a new incoming message, a third of them a tag added or
removed, a tenth their country set or cleared (about 0.8 membership changes per contact);
``heavy``: tags, country and last incoming message of every one (about 2.5).

Each figure is the median of ``--repeat`` repetitions (at least 3 is advised), each beside its
floor measured in the same run (for the rebuilds the two alternate which goes first; a targeted
floor reads before the snapshots are stored); the ratio is time / floor time (for the targeted
figures too, so lower is better throughout).  Between repetitions the
tables are vacuumed (``VACUUM ANALYZE``, untimed: the steady state autovacuum keeps).  After
every timed step the memberships are checked against the floors' predicates, which are written
by hand in SQL, not produced by the rule compiler.

The benchmark works in a schema of its own (``--schema``, default ``bench_recompute``, dropped
and recreated, and dropped at the end unless ``--keep``) via ``search_path``, so it never
touches other data.  Database: ``--db`` or ``$SEGMENTS_BENCH_DATABASE_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); if it is unreachable the benchmark says
so and exits 0 (skipped).  ``$SEGMENTS_BENCH_CONTACTS`` sets the default of ``--contacts``.

Run: ``python bench/recompute.py [--contacts N] [--repeat R] [--mix heavy]`` (``tox -e bench``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pgscratch
from pgscratch import COUNTRIES, TAGS, execute, fresh_schema, generate_contacts, reset_schema, vacuum
from sqlalchemy import Engine, text
from sqlalchemy.dialects import postgresql

from contact_segments import service
from contact_segments.service import EvaluatePending, UnitOfWork
from contact_segments.service.contacts import PENDING_BATCH
from contact_segments.storage import TRACKED_FIELDS, EventCause, make_engine, make_session_factory, migrate
from contact_segments.storage import queries as q
from contact_segments.storage.ids import uuid7_sql

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
URL_ENV = "SEGMENTS_BENCH_DATABASE_URL"
CONTACTS_ENV = "SEGMENTS_BENCH_CONTACTS"
WORKSPACE = "bench"
DAY = 86_400
NOW = 1_780_000_000.0
"""The instant every evaluation uses (fixed, so runs are reproducible)."""

FLOOR_PREDICATES: dict[str, str] = {
    # The five defaults' meaning (fixtures/default_segments.json), written by hand.
    "created_last_7_days": f"created_at > {NOW - 7 * DAY!r}",
    "inactive_30_days": f"last_incoming_message_at < {NOW - 30 * DAY!r} AND last_incoming_message_at <> 0",
    "with_tags": "cardinality(tags) > 0",
    "country_known": "country <> ''",
    "language_known": "language <> ''",
}

CHANGES = {
    # The SQL counterparts of the snapshot changes of --mix (see changed_snapshots).
    "typical": """
UPDATE contacts SET
    version = version + 1,
    last_incoming_message_at = :now - random() * 86400,
    tags = CASE WHEN random() >= 1.0 / 3 THEN tags
                WHEN cardinality(tags) > 0 THEN tags[1:cardinality(tags) - 1]
                ELSE ARRAY['promotion'] END,
    country = CASE WHEN random() >= 0.1 THEN country WHEN country IS NULL THEN 'MY' END,
    updated_at = :now
WHERE workspace_id = :ws AND id = ANY(:ids)
""",
    "heavy": """
UPDATE contacts SET
    version = version + 1,
    last_incoming_message_at = :now - random() * 60 * 86400,
    tags = CASE WHEN cardinality(tags) > 0 THEN '{}'::text[] ELSE ARRAY['promotion'] END,
    country = CASE WHEN country IS NULL THEN 'MY' END,
    updated_at = :now
WHERE workspace_id = :ws AND id = ANY(:ids)
""",
}


FLOOR_READS: dict[str, str] = {
    # The field each default's predicate reads: its pending bit decides whether it is compared.
    "created_last_7_days": "created_at",
    "inactive_30_days": "last_incoming_message_at",
    "with_tags": "tags",
    "country_known": "country",
    "language_known": "language",
}


def ceiling_statement(segments: dict[str, tuple[int, int]]) -> Any:
    """The hand-written targeted evaluation of one batch (the ceiling, see above): ``WITH taken
    (the pending rows, deleted), verdict (each contact against each default whose field
    changed), exited (DELETE), entered (INSERT), events (INSERT)``, returning how many rows it
    took."""
    keys = list(FLOOR_PREDICATES)
    ids = ", ".join(str(segments[key][0]) for key in keys)
    reads = ", ".join(str(1 << TRACKED_FIELDS.index(FLOOR_READS[key])) for key in keys)
    verdicts = ", ".join(f"coalesce(c.id IS NOT NULL AND {FLOOR_PREDICATES[key]}, false)" for key in keys)
    versions = " ".join(f"WHEN {segments[key][0]} THEN {segments[key][1]}" for key in keys)
    event_id = uuid7_sql().compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})  # as the service's
    batch = PENDING_BATCH
    # A contact no longer stored would be compared only with the defaults whose bits are set
    # (the service takes it out of every segment); the benchmark deletes none.
    return text(f"""
WITH taken AS MATERIALIZED (
    SELECT contact_id, mask FROM pending_changes WHERE workspace_id = :ws
    ORDER BY contact_id LIMIT {batch} FOR UPDATE SKIP LOCKED),
gone AS (
    DELETE FROM pending_changes WHERE workspace_id = :ws AND contact_id = ANY(ARRAY(SELECT contact_id FROM taken))),
verdict AS MATERIALIZED (
    SELECT v.segment_id, t.contact_id, v.belongs
    FROM taken t LEFT JOIN contacts c ON c.workspace_id = :ws AND c.id = t.contact_id
    CROSS JOIN LATERAL unnest(ARRAY[{ids}], ARRAY[{reads}]::bigint[], ARRAY[{verdicts}]) AS v(segment_id, reads, belongs)
    WHERE t.mask & v.reads <> 0),
exited AS (
    DELETE FROM memberships m USING verdict v
    WHERE NOT v.belongs AND m.segment_id = v.segment_id AND m.contact_id = v.contact_id
    RETURNING m.segment_id, m.contact_id),
entered AS (
    INSERT INTO memberships (segment_id, contact_id, workspace_id, since)
    SELECT v.segment_id, v.contact_id, :ws, :now FROM verdict v
    WHERE v.belongs AND NOT EXISTS (SELECT FROM memberships m WHERE m.segment_id = v.segment_id AND m.contact_id = v.contact_id)
    RETURNING segment_id, contact_id),
events AS (
    INSERT INTO membership_events (event_id, workspace_id, segment_id, contact_id, kind, cause, rule_version, occurred_at)
    SELECT {event_id}, :ws, segment_id, contact_id, kind, 'contact_changed',
           CASE segment_id {versions} END, :now
    FROM (SELECT segment_id, contact_id, 'entered' AS kind FROM entered
          UNION ALL SELECT segment_id, contact_id, 'exited' FROM exited) AS changed
    ORDER BY contact_id COLLATE "C", segment_id)
SELECT count(*) FROM taken
""")


def evaluate_by_hand(engine: Engine, statement: Any) -> None:
    """:func:`ceiling_statement` in a transaction a batch, after the share locks the service
    takes (the workspace row, the segments), until a batch comes up short."""
    params = {"ws": WORKSPACE, "now": NOW}
    with engine.connect() as connection:
        while True:
            with connection.begin():
                connection.execute(text("SELECT last_tick_at FROM workspaces WHERE id = :ws FOR SHARE"), params)
                connection.execute(text("SELECT id FROM segments WHERE workspace_id = :ws ORDER BY id FOR SHARE"), params).all()
                taken = connection.execute(statement, params).scalar_one()
            if taken < PENDING_BATCH:
                return


# --------------------------------------------------------------------------- plumbing


class Recorder:
    """A dispatcher that keeps the commands instead of running them (after the commit, as an
    inline dispatcher gets them)."""

    runs_elsewhere = False

    def __init__(self) -> None:
        self.commands: list[Any] = []

    def dispatch(self, commands: Iterable[Any]) -> None:
        self.commands.extend(commands)


@dataclass
class Figure:
    label: str
    unit: str  # "s" or "contacts/s"
    target: str
    ok: Callable[[float], bool]
    samples: list[float] = field(default_factory=list)  # seconds
    floors: list[float] = field(default_factory=list)  # seconds
    work: int = 1  # contacts per sample, for rates


def timed(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bench_engine(url: str, schema: str) -> Engine:
    return make_engine(url, connect_args={"options": f"-c search_path={schema}"}, pool_size=2)


def segments_by_key(engine: Engine) -> dict[str, tuple[int, int]]:
    """Default key -> (segment id, rule version)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT default_key, id, rule_version FROM segments WHERE workspace_id = :ws"), {"ws": WORKSPACE}
        )
        return {key: (ident, version) for key, ident, version in rows}


def check_memberships(engine: Engine, segments: dict[str, tuple[int, int]]) -> None:
    """Each segment's members are exactly the contacts its hand-written predicate matches."""
    pgscratch.check_memberships(engine, WORKSPACE, FLOOR_PREDICATES, segments)


# --------------------------------------------------------------------------- the steps


def setup(engine: Engine, count: int) -> dict[str, tuple[int, int]]:
    migrate(engine)
    uow = UnitOfWork.for_engine(engine)  # no dispatcher: the first builds are ours to time
    service.create_workspace(uow, WORKSPACE, name="Benchmark", now=NOW - 400 * DAY)
    with engine.begin() as connection:
        generate_contacts(connection, WORKSPACE, count, NOW)
    vacuum(engine, "contacts")
    return segments_by_key(engine)


def empty_memberships(engine: Engine) -> None:
    """Back to never built: no memberships, no events, and the segments not built for any
    version (else the service takes a first build for one delivered again after the segment
    was built, which writes an event per member)."""
    execute(engine, "TRUNCATE memberships, membership_events")
    execute(engine, "UPDATE segments SET built_version = 0 WHERE workspace_id = :ws", ws=WORKSPACE)


def rebuild_all(
    engine: Engine, segments: dict[str, tuple[int, int]], *, first_build: bool, incremental: bool = False
) -> None:
    uow = UnitOfWork.for_engine(engine)
    for segment_id, version in segments.values():
        result = service.rebuild_segment(
            uow, WORKSPACE, segment_id, rule_version=version, now=NOW, cause=EventCause.RULE_EDITED,
            first_build=first_build, incremental=incremental, count_members=False,  # as the tasks ask
        )  # fmt: skip
        if result.stale:
            raise SystemExit(f"rebuild of segment {segment_id} went stale")


def floor_insert(engine: Engine, segments: dict[str, tuple[int, int]]) -> None:
    for key, predicate in FLOOR_PREDICATES.items():
        execute(
            engine,
            f"""INSERT INTO memberships (segment_id, contact_id, workspace_id, since)
                SELECT :sid, id, workspace_id, :now FROM contacts WHERE workspace_id = :ws AND {predicate}""",
            sid=segments[key][0],
            ws=WORKSPACE,
            now=NOW,
        )


def floor_count(engine: Engine) -> None:
    with engine.connect() as connection:
        for predicate in FLOOR_PREDICATES.values():
            connection.scalar(
                text(f"SELECT count(*) FROM contacts WHERE workspace_id = :ws AND {predicate}"), {"ws": WORKSPACE}
            )


def sample_ids(engine: Engine, count: int, total: int, rng: random.Random) -> list[str]:
    numbers = rng.sample(range(1, total + 1), min(count, total))
    return sorted(f"c{n:08d}" for n in numbers)


def change_in_sql(engine: Engine, ids: list[str], mix: str) -> None:
    execute(engine, CHANGES[mix], ws=WORKSPACE, ids=ids, now=NOW)


def changed_snapshots(engine: Engine, ids: list[str], rng: random.Random, mix: str) -> list[dict[str, Any]]:
    """New versions of the contacts (see ``--mix``)."""
    factory = make_session_factory(engine)
    with factory() as session:
        views = q.load_contact_views(session, WORKSPACE, ids)
        versions = q.contact_versions(session, WORKSPACE, ids)
    snapshots = []
    for contact_id, view in views.items():
        snapshot: dict[str, Any] = dict(view)
        snapshot["version"] = versions[contact_id] + 1
        if mix == "heavy":
            snapshot["tags"] = [] if view["tags"] else [rng.choice(TAGS)]
            snapshot["country"] = None if view["country"] else rng.choice(COUNTRIES)
            snapshot["last_incoming_message_at"] = NOW - rng.uniform(0, 60 * DAY)
        else:
            snapshot["last_incoming_message_at"] = NOW - rng.uniform(0, DAY)
            if rng.random() < 1 / 3:
                tags = list(view["tags"])
                snapshot["tags"] = tags[:-1] if tags else [rng.choice(TAGS)]
            if rng.random() < 1 / 10:
                snapshot["country"] = None if view["country"] else rng.choice(COUNTRIES)
        snapshots.append(snapshot)
    return snapshots


def store(engine: Engine, snapshots: list[dict[str, Any]]) -> None:
    uow = UnitOfWork.for_engine(engine)
    with uow:
        stored = service.store_snapshots(uow, WORKSPACE, snapshots, now=NOW)
        uow.commit()
    if len(stored) != len(snapshots):
        raise SystemExit(f"stored {len(stored)} of {len(snapshots)} snapshots")


def evaluate_until_done(engine: Engine, changes: list[int]) -> None:
    """``service.evaluate_pending`` until it schedules no follow-up; the membership changes it
    made are appended to ``changes``."""
    factory = make_session_factory(engine)
    while True:
        recorder = Recorder()
        diff = service.evaluate_pending(UnitOfWork(factory, recorder), WORKSPACE, now=NOW)
        changes.append(len(diff.entered) + len(diff.exited))
        if not any(isinstance(c, EvaluatePending) for c in recorder.commands):
            return


_worker_engine: Engine | None = None


def _start_evaluator(url: str, schema: str) -> None:
    """A pool process's initializer: its own engine, connected before any timing."""
    global _worker_engine
    _worker_engine = bench_engine(url, schema)
    with _worker_engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _evaluate_in_process() -> int:
    assert _worker_engine is not None
    changes: list[int] = []
    evaluate_until_done(_worker_engine, changes)
    return sum(changes)


def _floor_in_process(ids: list[str]) -> None:
    assert _worker_engine is not None
    floor_read(_worker_engine, ids)


def evaluate_in_parallel(pool: Any, evaluators: int) -> None:
    """``evaluators`` processes of ``pool`` each run :func:`evaluate_until_done` at once; each
    must have changed some memberships (so it evaluated some of the contacts)."""
    changed = [done.get(timeout=600) for done in [pool.apply_async(_evaluate_in_process) for _ in range(evaluators)]]
    if not all(changed):
        raise SystemExit(f"an evaluator process evaluated nothing (membership changes per process: {changed})")


def floor_in_parallel(pool: Any, evaluators: int, ids: list[str]) -> None:
    """:func:`floor_read` of ``ids`` split among ``evaluators`` processes, at once."""
    parts = [ids[k::evaluators] for k in range(evaluators)]
    for done in [pool.apply_async(_floor_in_process, (part,)) for part in parts]:
        done.get(timeout=600)


def pending_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(
            text("SELECT count(*) FROM pending_changes WHERE workspace_id = :ws"), {"ws": WORKSPACE}
        )


def floor_read(engine: Engine, ids: list[str]) -> None:
    """What any targeted evaluation must look at: the contacts' rows (the columns the five
    defaults read) and their memberships (read here; the service finds them in its write)."""
    columns = "id, created_at, last_incoming_message_at, tags, country, language"
    with engine.connect() as connection:
        for start in range(0, len(ids), q.BATCH_SIZE):
            batch = ids[start : start + q.BATCH_SIZE]
            with connection.begin():
                connection.execute(
                    text(f"SELECT {columns} FROM contacts WHERE workspace_id = :ws AND id = ANY(:ids)"),
                    {"ws": WORKSPACE, "ids": batch},
                ).all()
                connection.execute(
                    text("SELECT contact_id, segment_id FROM memberships WHERE workspace_id = :ws AND contact_id = ANY(:ids)"),
                    {"ws": WORKSPACE, "ids": batch},
                ).all()


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=os.environ.get(URL_ENV) or DEFAULT_URL, help=f"database URL (${URL_ENV})")
    parser.add_argument("--schema", default="bench_recompute", help="schema to (re)create and work in")
    parser.add_argument(
        "--contacts", type=int, default=int(os.environ.get(CONTACTS_ENV) or 1_000_000), help=f"(${CONTACTS_ENV})"
    )
    parser.add_argument("--changed", type=int, default=10_000, help="contacts changed for the targeted figure")
    parser.add_argument(
        "--evaluators", type=int, default=2, help="processes evaluating at once for the parallel targeted figure (1: none)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per figure (the median is shown)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--mix",
        choices=["typical", "heavy"],
        default="typical",
        help="the targeted changes: typical = every contact gets a new incoming message, a third a tag "
        "added or removed, a tenth its country set or cleared; heavy = every contact gets its tags, "
        "country and last incoming message changed (about 2.5 membership changes each)",
    )
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default={"rebuild", "incremental", "full", "targeted"},
        help="comma-separated figures to measure: rebuild, incremental, full, targeted (default: all)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards (to inspect it)")
    args = parser.parse_args()
    if not args.schema.isidentifier():
        parser.error("--schema must be a plain identifier")

    if not fresh_schema(args.db, args.schema, "recompute"):
        return
    engine = bench_engine(args.db, args.schema)
    rng = random.Random(args.seed)
    n = args.contacts

    started = time.perf_counter()
    segments = setup(engine, n)
    print(f"{n:,} contacts generated in {time.perf_counter() - started:.1f} s (schema {args.schema!r})")

    rebuild = Figure("rebuild from empty, 5 segments", "s", "<= 2x", lambda r: r <= 2)
    incremental = Figure("incremental rebuild, 1% changed", "s", "<= 1.5x", lambda r: r <= 1.5)
    full = Figure("full rebuild (sweep), 1% changed", "s", "(none)", lambda r: True)
    targeted = Figure(f"targeted, {min(args.changed, n):,} contacts", "contacts/s", ">= 20,000/s", lambda rate: rate >= 20_000)
    targeted.work = min(args.changed, n)
    parallel = Figure(f"  the service, {args.evaluators} processes", "contacts/s", "(information)", lambda rate: True)
    parallel.work = targeted.work
    ceiling = Figure("  its work hand-written (ceiling)", "contacts/s", "(information)", lambda rate: True)
    ceiling.work = targeted.work

    # Rebuild from empty: the floor and the service alternate who goes first.
    for rep in range(args.repeat if "rebuild" in args.only else 0):
        for which in ((0, 1) if rep % 2 == 0 else (1, 0)):
            empty_memberships(engine)
            if which == 0:
                rebuild.floors.append(timed(lambda: floor_insert(engine, segments)))
            else:
                rebuild.samples.append(timed(lambda: rebuild_all(engine, segments, first_build=True)))
            check_memberships(engine, segments)
    if "rebuild" not in args.only:
        rebuild_all(engine, segments, first_build=True)
    vacuum(engine, "contacts", "memberships", "membership_events")

    # Incremental, then full: change 1% in SQL, then count (floor) and rebuild (service),
    # alternating which goes first.
    for figure, only_changed in ((incremental, True), (full, False)):
        for rep in range(args.repeat if figure.label.split()[0] in args.only else 0):
            change_in_sql(engine, sample_ids(engine, max(1, n // 100), n, rng), args.mix)
            vacuum(engine, "contacts", "memberships")

            def rebuild_them(only_changed: bool = only_changed) -> None:
                rebuild_all(engine, segments, first_build=False, incremental=only_changed)

            if rep % 2 == 0:
                figure.floors.append(timed(lambda: floor_count(engine)))
                figure.samples.append(timed(rebuild_them))
            else:
                figure.samples.append(timed(rebuild_them))
                figure.floors.append(timed(lambda: floor_count(engine)))
            check_memberships(engine, segments)

    # Targeted: store changed snapshots (untimed), evaluate them through the service (timed):
    # by this process, then (--evaluators > 1) by that many processes at once.
    changes: list[int] = []
    by_hand = ceiling_statement(segments)
    pool = None
    if "targeted" in args.only and args.evaluators > 1:
        engine.dispose()  # no pooled connection crosses the fork
        context = multiprocessing.get_context("fork")
        pool = context.Pool(args.evaluators, initializer=_start_evaluator, initargs=(args.db, args.schema))
    try:
        for rep in range(args.repeat if "targeted" in args.only else 0):
            ways: list[tuple[Figure, Callable[[], Any], Callable[[list[str]], Any]]] = [
                (targeted, lambda: evaluate_until_done(engine, changes), lambda ids: floor_read(engine, ids)),
                (ceiling, lambda: evaluate_by_hand(engine, by_hand), lambda ids: floor_read(engine, ids)),
            ]
            if rep % 2:
                ways.reverse()  # the service and the hand-written statement alternate who goes first
            if pool is not None:
                ways.append(
                    (
                        parallel,
                        lambda: evaluate_in_parallel(pool, args.evaluators),
                        lambda ids: floor_in_parallel(pool, args.evaluators, ids),
                    )
                )
            for figure, evaluate, floor in ways:
                ids = sample_ids(engine, targeted.work, n, rng)
                snapshots = changed_snapshots(engine, ids, rng, args.mix)
                figure.floors.append(timed(lambda ids=ids, floor=floor: floor(ids)))
                store(engine, snapshots)
                if pending_count(engine) != len(ids):
                    raise SystemExit("the stored snapshots did not all become pending")
                figure.samples.append(timed(evaluate))
                if pending_count(engine):
                    raise SystemExit("contacts still pending after evaluate_pending said it was done")
                check_memberships(engine, segments)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()

    engine.dispose()
    print(
        f"\nmedian of {args.repeat} repetitions, {n:,} contacts, 5 default segments, {args.mix} mix; "
        "ratio = time / floor time"
    )
    print(f"{'figure':<34}{'service':>15}{'floor':>15}{'ratio':>9}  {'target':<14}")
    for figure in (rebuild, incremental, full, targeted, ceiling, parallel):
        if not figure.samples:
            continue
        seconds, floor = statistics.median(figure.samples), statistics.median(figure.floors)
        ratio = seconds / floor
        if figure.unit == "s":
            shown, shown_floor, ok = f"{seconds:.3f} s", f"{floor:.3f} s", figure.ok(ratio)
        else:
            rate = figure.work / seconds
            shown, shown_floor, ok = f"{rate:,.0f}/s", f"{figure.work / floor:,.0f}/s", figure.ok(rate)
        verdict = "" if figure.target.startswith("(") else "ok" if ok else "MISSED"  # "(none)", "(information)"
        print(f"{figure.label:<34}{shown:>15}{shown_floor:>15}{ratio:>8.2f}x  {figure.target:<14}{verdict}")
        spread = ", ".join(f"{s:.3f}" for s in figure.samples)
        floors = ", ".join(f"{s:.3f}" for s in figure.floors)
        print(f"{'':<4}samples (s): {spread}; floors (s): {floors}")
    if changes:
        per_contact = sum(changes) / (targeted.work * len(targeted.samples))
        print(f"{args.mix} mix: the targeted evaluation made {per_contact:.2f} membership changes per changed contact")
    if not args.keep:
        reset_schema(args.db, args.schema, create=False)


if __name__ == "__main__":
    main()

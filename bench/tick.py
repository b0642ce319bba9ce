"""What does applying time-based flips cost: a tick, against rebuilding the segments? (PostgreSQL)

A workspace of ``--contacts`` contacts (default 1,000,000, bulk-loaded set-wise) with the five
default segments, memberships built.  Time then advances in steps of one beat (``--step``, 60
s), and between two consecutive instants exactly ``--flips`` contacts (default 100) are due to
flip: half leave "Contacts created <7 days ago" (their ``created_at`` turns 7 days old in the
step), half enter "Contacts inactive >30 days" (their last incoming message turns 30 days
old).  No other contact's timestamp lies near a threshold, so the flips are exactly those.

Each step is applied one of three ways, interleaved, each timed in the same run:

* **tick** - ``service.tick(now)``: index range queries find the due contacts, which alone are
  evaluated (it must report ``--flips`` candidates, half entered, half exited);
* **floor** - the same work written by hand (:data:`FLOOR_SQL`), on a plain connection: move
  the watermark, share-lock the segments, then one statement that compares the two windows'
  contacts with the hand-written predicates and writes the flips and their events; a commit.
  No implementation of the tick can do much less, so it shows how much of the tick is ours;
* **rebuild** - ``service.rebuild_segment`` of each time-relative segment at ``now`` (what a
  periodic recompute does); the workspace's tick watermark is then moved to ``now``, untimed,
  so the next tick covers one step too.

The figures are medians (``--ticks`` ticks and as many floors, ``--rebuilds`` rebuilds; one
untimed tick first); the ratio is rebuild time / tick time.  Beside each time, its CPU: this process plus the
PostgreSQL processes serving its connections (by ``application_name``, from /proc), which moves
less with the machine's other load.  At the end every segment's members are checked against a
hand-written predicate at the last instant.  A tick's time includes its commit.

The benchmark works in its own schema (``--schema``, default ``bench_tick``, dropped and
recreated; dropped afterwards unless ``--keep``) via ``search_path``.  Database: ``--db`` or
``$SEGMENTS_BENCH_DATABASE_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
If PostgreSQL is unreachable it says so and exits 0 (skipped).  A run holds an advisory lock on
its schema, so a second run stops instead of dropping it.

Run: ``python bench/tick.py [--contacts N]`` (``tox -e bench``).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import time
from dataclasses import dataclass
from typing import Any

import pgscratch
from pgscratch import execute, generate_contacts, reset_schema, say_skipped, schema_url, vacuum
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from contact_segments import service
from contact_segments.service import UnitOfWork
from contact_segments.storage import EventCause, make_engine, migrate

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DB_ENV = "SEGMENTS_BENCH_DATABASE_URL"
WORKSPACE = "bench-tick"
DAY = 86_400.0
WEEK = 7 * DAY
MONTH = 30 * DAY
T0 = 1_780_000_000.0
"""The instant the memberships are built at (fixed, so runs are reproducible)."""

TIME_RELATIVE = ("created_last_7_days", "inactive_30_days")

PREDICATES: dict[str, str] = {
    # The five defaults' meaning (fixtures/default_segments.json), by hand, at :now.
    "created_last_7_days": "created_at > :now - 604800",
    "inactive_30_days": "last_incoming_message_at < :now - 2592000 AND last_incoming_message_at <> 0",
    "with_tags": "cardinality(tags) > 0",
    "country_known": "country <> ''",
    "language_known": "language <> ''",
}

FLOOR_SQL = """
WITH moved AS (
    UPDATE workspaces SET last_tick_at = :now WHERE id = :ws RETURNING id
),
recent AS MATERIALIZED (
    SELECT c.id, c.created_at > :now - 604800 AS matches,
           EXISTS (SELECT 1 FROM memberships m WHERE m.segment_id = :recent AND m.contact_id = c.id) AS is_member
    FROM contacts c
    WHERE c.workspace_id = :ws AND c.created_at > :start - 604800 AND c.created_at <= :now - 604800
),
inactive AS MATERIALIZED (
    SELECT c.id, c.last_incoming_message_at < :now - 2592000 AND c.last_incoming_message_at <> 0 AS matches,
           EXISTS (SELECT 1 FROM memberships m WHERE m.segment_id = :inactive AND m.contact_id = c.id) AS is_member
    FROM contacts c
    WHERE c.workspace_id = :ws AND c.last_incoming_message_at >= :start - 2592000
      AND c.last_incoming_message_at < :now - 2592000
),
flips AS MATERIALIZED (
    SELECT CAST(:recent AS integer) AS segment_id, id, matches FROM recent WHERE matches <> is_member
    UNION ALL SELECT CAST(:inactive AS integer), id, matches FROM inactive WHERE matches <> is_member
),
entered AS (
    INSERT INTO memberships (segment_id, contact_id, workspace_id, since)
    SELECT segment_id, id, :ws, :now FROM flips WHERE matches
    RETURNING segment_id, contact_id
),
exited AS (
    DELETE FROM memberships m USING flips f
    WHERE NOT f.matches AND m.segment_id = f.segment_id AND m.contact_id = f.id
    RETURNING m.segment_id, m.contact_id
),
logged AS (
    INSERT INTO membership_events (event_id, workspace_id, segment_id, contact_id, kind, cause, rule_version, occurred_at)
    SELECT gen_random_uuid()::text, :ws, segment_id, contact_id, kind, 'time_passed',
           CASE segment_id WHEN :recent THEN :recent_version ELSE :inactive_version END, :now
    FROM (SELECT segment_id, contact_id, 'entered' AS kind FROM entered
          UNION ALL SELECT segment_id, contact_id, 'exited' FROM exited) AS changed
    ORDER BY contact_id COLLATE "C", segment_id
)
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM entered), (SELECT count(*) FROM exited)
"""
"""The floor's one statement, after the watermark's move and the segments' share lock."""

# --------------------------------------------------------------------------- plumbing


TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu(engine: Engine, application_name: str) -> float:
    """CPU seconds used so far by the PostgreSQL processes serving ``application_name`` (/proc).

    ``engine`` is a monitoring engine whose connections have another name, so it never counts
    itself, and never takes a connection from the measured pool."""
    with engine.connect() as connection:
        pids = connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": application_name},
        ).scalars().all()
    return sum(process_cpu(pid) for pid in pids)


def process_cpu(pid: int) -> float:
    """CPU seconds a process has used: /proc/<pid>/schedstat (nanoseconds), else /proc/<pid>/stat
    (clock ticks); 0 if it is gone."""
    try:
        return int(open(f"/proc/{pid}/schedstat").read().split()[0]) / 1e9  # noqa: SIM115
    except (OSError, ValueError, IndexError):
        pass
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Sample:
    wall: float  # seconds
    client: float  # CPU seconds of this process
    server: float  # CPU seconds of the server processes of its connections

    @property
    def cpu(self) -> float:
        return self.client + self.server


def timed(engine: Engine, application_name: str, function: Any) -> tuple[Sample, Any]:
    server = server_cpu(engine, application_name)
    client = time.process_time()
    start = time.perf_counter()
    result = function()
    wall = time.perf_counter() - start
    client = time.process_time() - client
    return Sample(wall, client, server_cpu(engine, application_name) - server), result


# --------------------------------------------------------------------------- the data


def setup(engine: Engine, count: int, instants: list[float], flips: int, seed: int) -> dict[str, tuple[int, int]]:
    """Contacts, the five defaults with memberships built at :data:`T0`, the watermark at T0,
    and ``flips`` contacts due in each step ``(instants[k - 1], instants[k]]``.  Returns each
    default's (segment id, rule version) by key."""
    migrate(engine)
    uow = UnitOfWork.for_engine(engine)  # no dispatcher: the first builds are ours
    service.create_workspace(uow, WORKSPACE, name="Tick benchmark", now=T0 - 400 * DAY)
    with engine.begin() as connection:
        generate_contacts(connection, WORKSPACE, count, T0)
        # Nobody near a threshold over the whole run, except the contacts planned below.
        first, last = instants[0], instants[-1]
        connection.execute(
            text("UPDATE contacts SET created_at = created_at - :day WHERE workspace_id = :ws "
                 "AND created_at > :low AND created_at <= :high"),
            {"ws": WORKSPACE, "day": DAY, "low": first - WEEK - 1, "high": last - WEEK + 1},
        )  # fmt: skip
        connection.execute(
            text("UPDATE contacts SET last_incoming_message_at = last_incoming_message_at - :day "
                 "WHERE workspace_id = :ws AND last_incoming_message_at >= :low AND last_incoming_message_at < :high"),
            {"ws": WORKSPACE, "day": DAY, "low": first - MONTH - 1, "high": last - MONTH + 1},
        )  # fmt: skip
        rng = random.Random(seed)
        steps = len(instants) - 1
        chosen = rng.sample(range(1, count + 1), steps * flips)
        half = flips // 2
        for k in range(1, len(instants)):
            batch = chosen[(k - 1) * flips : k * flips]
            earlier, later = instants[k - 1], instants[k]
            # created_at + 7 days in (earlier, later]: a member at `earlier`, not at `later`.
            for n in batch[:half]:
                connection.execute(
                    text("UPDATE contacts SET created_at = :at WHERE workspace_id = :ws AND id = :id"),
                    {"ws": WORKSPACE, "id": f"c{n:08d}", "at": later - WEEK - rng.uniform(0, later - earlier) * 0.999},
                )
            # last incoming + 30 days in [earlier, later): not a member at `earlier`, one at `later`.
            for n in batch[half:]:
                connection.execute(
                    text("UPDATE contacts SET last_incoming_message_at = :at WHERE workspace_id = :ws AND id = :id"),
                    {"ws": WORKSPACE, "id": f"c{n:08d}", "at": later - MONTH - (later - earlier) * (1 - rng.uniform(0, 0.999))},
                )
    vacuum(engine, "contacts")
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT default_key, id, rule_version FROM segments WHERE workspace_id = :ws"), {"ws": WORKSPACE}
        )
        segments = {key: (ident, version) for key, ident, version in rows}
    for segment_id, version in segments.values():
        service.rebuild_segment(
            UnitOfWork.for_engine(engine), WORKSPACE, segment_id, rule_version=version, now=T0,
            cause=EventCause.RULE_EDITED, first_build=True,
        )  # fmt: skip
    set_watermark(engine, T0)
    vacuum(engine, "contacts", "memberships", "membership_events")
    return segments


def set_watermark(engine: Engine, at: float) -> None:
    execute(engine, "UPDATE workspaces SET last_tick_at = :at WHERE id = :ws", at=at, ws=WORKSPACE)


def check_memberships(engine: Engine, segments: dict[str, tuple[int, int]], now: float) -> None:
    """Each segment's members are exactly the contacts its hand-written predicate matches at ``now``."""
    pgscratch.check_memberships(engine, WORKSPACE, PREDICATES, segments, now=now)


# --------------------------------------------------------------------------- the two ways


def run_tick(engine: Engine, monitor: Engine, name: str, now: float, flips: int) -> Sample:
    sample, result = timed(monitor, name, lambda: service.tick(UnitOfWork.for_engine(engine), WORKSPACE, now=now))
    expected = (flips, flips - flips // 2, flips // 2)
    if (result.candidates, result.entered, result.exited) != expected:
        raise SystemExit(
            f"the tick at {now} found {result.candidates} candidates, {result.entered} entered and "
            f"{result.exited} exited; expected {expected[0]}, {expected[1]} and {expected[2]}"
        )
    return sample


def run_floor(
    engine: Engine, monitor: Engine, name: str, segments: dict[str, tuple[int, int]], start: float, now: float, flips: int
) -> Sample:
    def floor() -> tuple[int, int, int]:
        with engine.begin() as connection:
            connection.execute(
                text("SELECT id FROM segments WHERE workspace_id = :ws ORDER BY id FOR SHARE"), {"ws": WORKSPACE}
            ).all()
            (recent, recent_version), (inactive, inactive_version) = (segments[key] for key in TIME_RELATIVE)
            parameters = {
                "ws": WORKSPACE, "now": now, "start": start, "recent": recent, "recent_version": recent_version,
                "inactive": inactive, "inactive_version": inactive_version,
            }  # fmt: skip
            return tuple(connection.execute(text(FLOOR_SQL), parameters).one())

    sample, (moved, entered, exited) = timed(monitor, name, floor)
    if (moved, entered, exited) != (1, flips - flips // 2, flips // 2):
        raise SystemExit(f"the floor at {now} moved {moved} watermark, {entered} entered and {exited} exited")
    return sample


def run_rebuild(
    engine: Engine, monitor: Engine, name: str, segments: dict[str, tuple[int, int]], now: float, flips: int
) -> Sample:
    def rebuild() -> tuple[int, int]:
        entered = exited = 0
        for key in TIME_RELATIVE:
            segment_id, version = segments[key]
            result = service.rebuild_segment(
                UnitOfWork.for_engine(engine), WORKSPACE, segment_id, rule_version=version, now=now,
                cause=EventCause.TIME_PASSED, count_members=False,  # as the tasks ask
            )  # fmt: skip
            if result.stale:
                raise SystemExit(f"the rebuild of {key!r} went stale")
            entered, exited = entered + result.entered, exited + result.exited
        return entered, exited

    sample, (entered, exited) = timed(monitor, name, rebuild)
    if (entered, exited) != (flips - flips // 2, flips // 2):
        raise SystemExit(f"the rebuild at {now} had {entered} entered and {exited} exited")
    set_watermark(engine, now)  # the rebuild applied this step: the next tick starts here
    return sample


# --------------------------------------------------------------------------- main


def terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=os.environ.get(DB_ENV) or DEFAULT_DB, help=f"database URL (${DB_ENV})")
    parser.add_argument("--schema", default="bench_tick", help="schema to (re)create and work in")
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--flips", type=int, default=100, help="contacts due to flip between two ticks")
    parser.add_argument("--step", type=float, default=60.0, help="seconds between two ticks (a beat)")
    parser.add_argument("--ticks", type=int, default=9, help="timed ticks (the median is shown)")
    parser.add_argument("--rebuilds", type=int, default=3, help="timed rebuilds (the median is shown)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards (to inspect it)")
    args = parser.parse_args()
    if not args.schema.isidentifier():
        parser.error("--schema must be a plain identifier")
    if args.flips < 2 or args.flips * (2 * args.ticks + args.rebuilds + 1) > args.contacts:
        parser.error("--flips must be at least 2, and all steps' flips must fit in --contacts")

    # An untimed tick first; then ticks and floors alternating which goes first, and a rebuild
    # after every few, spread over the run.
    plan = ["warm-up"]
    every = max(1, args.ticks // max(1, args.rebuilds))
    for k in range(1, args.ticks + 1):
        plan += ["tick", "floor"] if k % 2 else ["floor", "tick"]
        if k % every == 0 and plan.count("rebuild") < args.rebuilds:
            plan.append("rebuild")
    plan += ["rebuild"] * (args.rebuilds - plan.count("rebuild"))
    instants = [T0 + k * args.step for k in range(len(plan) + 1)]

    signal.signal(signal.SIGTERM, terminate)  # so the schema is dropped on a kill too
    try:
        lock = make_engine(args.db, poolclass=NullPool, connect_args={"connect_timeout": 5}).connect()
    except OperationalError as error:
        say_skipped("tick", args.db, error)
        return
    # Held for the run, so a second run started meanwhile stops instead of dropping this one's schema.
    key = f"contact-segments bench schema {args.schema}"
    if not lock.scalar(text("SELECT pg_try_advisory_lock(hashtext(:key))"), {"key": key}):
        lock.close()
        raise SystemExit(f"another benchmark run is using schema {args.schema!r}; wait for it, or give --schema")
    lock.commit()
    reset_schema(args.db, args.schema)
    engine = make_engine(schema_url(args.db, args.schema), pool_size=2)
    monitor = make_engine(args.db, pool_size=1)
    try:
        started = time.perf_counter()
        segments = setup(engine, args.contacts, instants, args.flips, args.seed)
        print(f"{args.contacts:,} contacts, 5 default segments, memberships built in "
              f"{time.perf_counter() - started:.1f} s (schema {args.schema!r})")  # fmt: skip
        ticks: list[Sample] = []
        floors: list[Sample] = []
        rebuilds: list[Sample] = []
        for k, step in enumerate(plan, start=1):
            now = instants[k]
            if step == "rebuild":
                rebuilds.append(run_rebuild(engine, monitor, args.schema, segments, now, args.flips))
            elif step == "floor":
                floors.append(run_floor(engine, monitor, args.schema, segments, instants[k - 1], now, args.flips))
            else:
                sample = run_tick(engine, monitor, args.schema, now, args.flips)
                if step == "tick":
                    ticks.append(sample)
        check_memberships(engine, segments, instants[-1])
    finally:
        engine.dispose()
        monitor.dispose()
        if not args.keep:
            reset_schema(args.db, args.schema, create=False)
        lock.close()  # releases the advisory lock

    med = statistics.median
    tick, rebuild, floor = med(s.wall for s in ticks), med(s.wall for s in rebuilds), med(s.wall for s in floors)
    tick_cpu, rebuild_cpu = med(s.cpu for s in ticks), med(s.cpu for s in rebuilds)
    ratio, cpu_ratio = rebuild / tick, rebuild_cpu / tick_cpu
    print(f"\n{args.contacts:,} contacts, {args.flips} flips per {args.step:.0f} s step; medians of "
          f"{len(ticks)} ticks and {len(rebuilds)} rebuilds (memberships checked afterwards)")  # fmt: skip
    print(f"{'figure':<48}{'time':>12}{'CPU':>12}{'target':>12}")
    rows = [
        ("tick (service.tick)", tick, tick_cpu, "<= 50 ms", tick <= 0.05),
        ("floor: the same flips by hand-written SQL", floor, med(s.cpu for s in floors), "", None),
        (f"rebuild of the {len(TIME_RELATIVE)} time-relative segments", rebuild, rebuild_cpu, "", None),
    ]
    for label, seconds, cpu, target, ok in rows:
        verdict = "" if ok is None else (" ok" if ok else " MISSED")
        print(f"{label:<48}{seconds * 1000:>9,.1f} ms{cpu * 1000:>9,.1f} ms{target:>12}{verdict}")
    verdict = " ok" if ratio >= 100 else " MISSED"
    print(f"{'rebuild / tick':<48}{ratio:>11,.0f}x{cpu_ratio:>11,.0f}x{'>= 100x':>12}{verdict}")
    print(f"{'rebuild / floor (what any tick could reach)':<48}{rebuild / floor:>11,.0f}x")
    print(f"{'tick / floor':<48}{tick / floor:>11,.2f}x")
    print("\n  CPU: this process plus the PostgreSQL server processes of its connections")
    for label, samples in (("tick", ticks), ("floor", floors), ("rebuild", rebuilds)):
        client, server = med(s.client for s in samples), med(s.server for s in samples)
        print(f"  {label}: client {client * 1000:,.1f} ms, server {server * 1000:,.1f} ms (medians)")
    print(f"  ticks (ms): {', '.join(f'{s.wall * 1000:.1f}' for s in ticks)}")
    print(f"  floors (ms): {', '.join(f'{s.wall * 1000:.1f}' for s in floors)}")
    print(f"  rebuilds (ms): {', '.join(f'{s.wall * 1000:,.0f}' for s in rebuilds)}")


if __name__ == "__main__":
    main()

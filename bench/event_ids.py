"""What does an event's id cost its insert once the outbox is large? (PostgreSQL)

The outbox (``membership_events``) keeps every event, so its unique ``event_id`` index grows
without end.  This fills the migrated table with ``--events`` (4,000,000) delivered events, then
appends batches of ``--batch`` (830: what the targeted evaluation of 1,000 contacts writes)
events, each batch one committed ``INSERT ... SELECT``, its ids made by:

* ``uuid7_sql()`` - the engine's: time-ordered (version 7), so each batch lands at the right-hand
  edge of the index;
* ``gen_random_uuid()`` - the baseline (what the engine wrote before): random (version 4), so each
  id lands on a random leaf page of the index.

The two alternate batch by batch (``--repeat`` batches each), in the same run, against the same
table; the ratio is the version 7 batch's median time over the version 4 one's (lower is better).

The benchmark works in a schema of its own (``--schema``, default ``bench_event_ids``, dropped
at the end unless ``--keep``).  Database: ``--db`` or ``$SEGMENTS_BENCH_DATABASE_URL``
(default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``); if it is unreachable the
benchmark says so and exits 0 (skipped).

Run: ``python bench/event_ids.py [--events N] [--repeat R]`` (``tox -e bench``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from pgscratch import execute, fresh_schema, reset_schema, schema_url, vacuum
from sqlalchemy import Engine, func, select, text
from sqlalchemy.dialects import postgresql

from contact_segments import service
from contact_segments.service import UnitOfWork
from contact_segments.storage import make_engine, migrate
from contact_segments.storage.ids import uuid7_sql

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
URL_ENV = "SEGMENTS_BENCH_DATABASE_URL"
WORKSPACE = "bench"
NOW = 1_780_000_000.0

FILL = """
INSERT INTO membership_events (event_id, workspace_id, segment_id, contact_id, kind, cause,
                               rule_version, occurred_at, delivered_at)
SELECT gen_random_uuid()::text, :ws, (SELECT min(id) FROM segments), 'c' || lpad((g % 1000000)::text, 8, '0'),
       'entered', 'contact_changed', 1, :now, :now
FROM generate_series(1, :count) AS g
"""

APPEND = """
INSERT INTO membership_events (event_id, workspace_id, segment_id, contact_id, kind, cause,
                               rule_version, occurred_at)
SELECT {event_id}, :ws, (SELECT min(id) FROM segments), 'c' || lpad((g * 7919 % 1000000)::text, 8, '0'),
       'exited', 'contact_changed', 1, :now
FROM generate_series(1, :count) AS g
"""

ID_MAKERS = {
    "version 7 (uuid7_sql)": str(
        select(uuid7_sql()).compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    ).removeprefix("SELECT "),
    "version 4 (gen_random_uuid)": "gen_random_uuid()::text",
}


def setup(engine: Engine, events: int) -> None:
    """The schema, a workspace with the five defaults, and ``events`` delivered events."""
    migrate(engine)
    service.create_workspace(UnitOfWork.for_engine(engine), WORKSPACE, name="Benchmark", now=NOW)
    execute(engine, FILL, ws=WORKSPACE, count=events, now=NOW)
    vacuum(engine, "membership_events")


def append(engine: Engine, event_id: str, count: int) -> float:
    started = time.perf_counter()
    execute(engine, APPEND.format(event_id=event_id), ws=WORKSPACE, count=count, now=NOW)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=os.environ.get(URL_ENV, DEFAULT_URL))
    parser.add_argument("--schema", default="bench_event_ids")
    parser.add_argument("--events", type=int, default=4_000_000, help="delivered events in the outbox before timing")
    parser.add_argument("--batch", type=int, default=830, help="events a timed batch appends")
    parser.add_argument("--repeat", type=int, default=40, help="timed batches of each kind of id")
    parser.add_argument("--keep", action="store_true", help="leave the schema in place")
    args = parser.parse_args()
    if not args.schema.isidentifier():
        parser.error("--schema must be a plain identifier")

    if not fresh_schema(args.db, args.schema, "event id"):
        return
    engine = make_engine(schema_url(args.db, args.schema))
    started = time.perf_counter()
    setup(engine, args.events)
    with engine.connect() as connection:
        size = connection.scalar(select(func.pg_size_pretty(func.pg_relation_size(text("'uq_membership_events_event_id'")))))
    print(f"{args.events:,} events in the outbox in {time.perf_counter() - started:.1f} s (event_id index: {size})")

    samples: dict[str, list[float]] = {name: [] for name in ID_MAKERS}
    for rep in range(args.repeat):
        names = list(ID_MAKERS) if rep % 2 == 0 else list(reversed(ID_MAKERS))
        for name in names:
            samples[name].append(append(engine, ID_MAKERS[name], args.batch))
    engine.dispose()

    baseline = statistics.median(samples["version 4 (gen_random_uuid)"])
    print(f"\nmedian of {args.repeat} batches of {args.batch} events each; ratio = time / version 4 time")
    print(f"{'event id':<30}{'median':>11}{'p90':>11}{'per event':>12}{'ratio':>9}")
    for name, times in samples.items():
        median, p90 = statistics.median(times), statistics.quantiles(times, n=10)[-1]
        print(
            f"{name:<30}{median * 1000:>8.2f} ms{p90 * 1000:>8.2f} ms{median / args.batch * 1e6:>9.1f} us"
            f"{median / baseline:>8.2f}x"
        )
    if not args.keep:
        reset_schema(args.db, args.schema, create=False)


if __name__ == "__main__":
    main()

"""How fast are export and import of segment definitions?

Over 500 segments with complex rules (each an ``and`` of 5-8 conditions with nested ``or`` groups,
value lists, custom fields and time windows), this times, through the service:

* ``export``    - ``service.export_segments`` + ``service.render_export``: read the 500 segments,
  build the document, write its text (sorted keys, indented);
* ``validate``  - ``service.validate_export`` of that text: parse, check every field and rule,
  derive the conditions (no database);
* ``import``    - ``service.import_segments`` of that text into an empty workspace: validation
  included, then 500 segments created in one transaction and committed.  The first builds that
  follow a commit are follow-up work, not the import: the unit of work has no dispatcher here.

The floor is a bare ``json.loads`` + ``json.dumps`` of the same document's text, measured in the
same run.  Every figure is the median of ``--repeat`` repetitions, interleaved with the floor's;
the ratio is figure / floor.  **Target: import <= 20x the floor.**

Database: a temporary SQLite file (the embedded default), or ``--db URL`` (e.g. PostgreSQL; the
benchmark then works in its own schema ``--schema``, created for the run and dropped after it).

Run: ``python bench/transfer.py [--repeat R] [--db URL]`` (``tox -e bench``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from contact_segments import service
from contact_segments.rules.transfer import export_document
from contact_segments.service import UnitOfWork
from contact_segments.storage import make_engine, make_session_factory, migrate, normalize_url

NOW = 1_780_000_000.0
DAY = 86_400
SEGMENTS = 500
TARGET = 20.0

COUNTRIES = ["MY", "SG", "ID", "TH", "PH", "VN", "US", "GB"]
LANGUAGES = ["en", "ms", "id", "th", "zh", "vi"]
TAGS = ["promotion", "vip", "newsletter", "b2b", "churn-risk", "event-2026", "beta", "wholesale"]


def complex_rule(rng: random.Random) -> dict[str, Any]:
    """An ``and`` of 5-8 conditions of every kind, some in nested ``or`` groups."""
    pool: list[Callable[[], Any]] = [
        lambda: {"===": [{"var": "country"}, rng.choice(COUNTRIES)]},
        lambda: {"in": [{"var": "language"}, rng.sample(LANGUAGES, 3)]},
        lambda: {"or": [{"in": [tag, {"var": "tags"}]} for tag in rng.sample(TAGS, 3)]},
        lambda: {"and": [{"in": [tag, {"var": "tags"}]} for tag in rng.sample(TAGS, 2)]},
        lambda: {"!": [{"or": [{"in": [tag, {"var": "tags"}]} for tag in rng.sample(TAGS, 2)]}]},
        lambda: {"in": [f"@{rng.choice(['acme', 'example', 'corp'])}.com", {"var": "email"}]},
        lambda: {"!!": [{"var": rng.choice(["email", "phone", "first_name"])}]},
        lambda: {
            "and": [
                {"!!": [{"var": "last_incoming_message_at"}]},
                {
                    "<": [
                        {"var": "last_incoming_message_at"},
                        {"-": [{"var": "now"}, rng.randint(1, 90) * DAY]},
                    ]
                },
            ]
        },
        lambda: {
            "and": [
                {"!!": [{"var": "created_at"}]},
                {"<=": [1767196800 + rng.randint(0, 100) * DAY, {"var": "created_at"}, 1780000000]},
            ]
        },
        lambda: {
            "and": [
                {"!": [{"missing": [f"custom_fields.score_{rng.randint(1, 9)}"]}]},
                {
                    "<=": [
                        rng.randint(0, 10),
                        {"var": f"custom_fields.score_{rng.randint(1, 9)}"},
                        rng.randint(11, 99),
                    ]
                },
            ]
        },
        lambda: {"!==": [{"var": "lifecycle"}, rng.choice(["lead", "customer", "churned"])]},
        lambda: {
            "or": [
                {"===": [{"var": "last_interacted_channel"}, rng.choice(["whatsapp", "email", "sms"])]},
                {"===": [{"var": "custom_fields.vip"}, True]},
            ]
        },
    ]
    return {"and": [make() for make in rng.sample(pool, rng.randint(5, 8))]}


def source_document(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    segments = [
        {
            "name": f"Audience {number:03d} — {rng.choice(COUNTRIES)}",
            "description": f"Generated audience number {number} for the transfer benchmark.",
            "rule": complex_rule(rng),
            "conditions": None,
            "is_default": False,
        }
        for number in range(SEGMENTS)
    ]
    return export_document(
        workspace_id="source", timezone="Asia/Kuala_Lumpur", exported_at=NOW, segments=segments
    )


def empty_workspace(uow: UnitOfWork, workspace_id: str) -> None:
    """A workspace without segments (its defaults deleted): room for 500."""
    service.create_workspace(uow, workspace_id, timezone="Asia/Kuala_Lumpur", now=NOW)
    for view in service.list_segments(uow, workspace_id):
        service.delete_segment(uow, workspace_id, view.id, now=NOW)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--db", help="Database URL (default: a temporary SQLite file).")
    parser.add_argument("--schema", default="bench_transfer", help="PostgreSQL schema to work in.")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        url = args.db or f"sqlite:///{Path(directory) / 'transfer.db'}"
        engine = make_engine(url)
        if engine.dialect.name == "postgresql":
            with engine.begin() as connection:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE'))
                connection.execute(text(f'CREATE SCHEMA "{args.schema}"'))
            engine.dispose()
            engine = make_engine(
                normalize_url(url).update_query_dict({"options": f"-csearch_path={args.schema}"})
            )
        migrate(engine)
        uow = UnitOfWork(make_session_factory(engine))  # no dispatcher: no first builds

        # The source workspace: 500 segments, imported once (untimed).
        empty_workspace(uow, "source")
        service.import_segments(uow, "source", source_document(args.seed), now=NOW)
        exported_text = service.render_export(service.export_segments(uow, "source", now=NOW))
        exported_bytes = exported_text.encode("utf-8")

        floor, export, validate, imported = [], [], [], []
        for repetition in range(args.repeat):
            floor.append(timed(lambda: json.dumps(json.loads(exported_text)))[0])
            seconds, rendered = timed(
                lambda: service.render_export(service.export_segments(uow, "source", now=NOW))
            )
            assert rendered == exported_text, "exports of the same definitions must be byte-identical"
            export.append(seconds)
            seconds, check = timed(lambda: service.validate_export(exported_bytes))
            assert check.valid, check.problems
            validate.append(seconds)
            target = f"target-{repetition}"
            empty_workspace(uow, target)
            seconds, report = timed(lambda: service.import_segments(uow, target, exported_bytes, now=NOW))  # noqa: B023
            assert report.counts()["created"] == SEGMENTS
            imported.append(seconds)
            service.delete_workspace(uow, target)
        engine.dispose()
        if engine.dialect.name == "postgresql":
            admin = make_engine(url)
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE'))
            admin.dispose()

    floor_ms = median_ms(floor)
    print(
        f"{SEGMENTS} segments with complex rules, {len(exported_bytes):,} bytes of export; "
        f"median of {args.repeat} on {engine.dialect.name}"
    )
    print(f"{'step':<44}{'ms':>10}{'x floor':>10}")
    print(f"{'floor: json.loads + json.dumps':<44}{floor_ms:>10.1f}{1:>10.1f}")
    for label, samples in (
        ("export (read, build, write text)", export),
        ("validate (parse, check, derive conditions)", validate),
        ("import (validate + create 500, commit)", imported),
    ):
        ms = median_ms(samples)
        print(f"{label:<44}{ms:>10.1f}{ms / floor_ms:>10.1f}")
    ratio = median_ms(imported) / floor_ms
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"import is {ratio:.1f}x the floor: {verdict} the target of <= {TARGET:.0f}x")


if __name__ == "__main__":
    main()

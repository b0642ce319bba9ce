"""Scratch PostgreSQL schemas for the benchmarks (each works in a schema of its own, dropped
after), and the contacts they fill them with."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, make_url, text
from sqlalchemy.exc import OperationalError

from contact_segments.storage import make_engine


def schema_url(url: str, schema: str) -> str:
    """``url`` with connections in ``schema`` (``search_path``), named after it
    (``application_name``, so their server processes' CPU time can be found)."""
    query = {"options": f"-csearch_path={schema}", "application_name": schema}
    return make_url(url).update_query_dict(query).render_as_string(hide_password=False)


def reset_schema(url: str, schema: str, *, create: bool = True) -> None:
    """Drop ``schema`` with everything in it, and (with ``create``) make it anew."""
    engine = make_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            if create:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        engine.dispose()


def fresh_schema(url: str, schema: str, benchmark: str) -> bool:
    """:func:`reset_schema` for ``benchmark``; False, having said that it is skipped and why, if
    PostgreSQL at ``url`` is unreachable."""
    try:
        reset_schema(url, schema)
    except OperationalError as error:
        say_skipped(benchmark, url, error)
        return False
    return True


def say_skipped(benchmark: str, url: str, error: OperationalError) -> None:
    """Say that ``benchmark`` is skipped because PostgreSQL at ``url`` is unreachable, and why."""
    reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
    print(f"{benchmark} benchmark skipped: PostgreSQL is unreachable at {url} ({reason})")


def execute(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.begin() as connection:
        return connection.execute(text(sql), params)


def vacuum(engine: Engine, *tables: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"VACUUM (ANALYZE) {', '.join(tables)}"))


TAGS = ["promotion", "vip", "newsletter", "b2b", "churn-risk", "event-2026"]
COUNTRIES = ["MY", "SG", "ID", "TH", "PH", "VN", "US", "GB"]
LANGUAGES = ["en", "ms", "id", "th", "zh", "vi"]
LIFECYCLES = ["new lead", "hot lead", "customer", "cold"]
PLANS = ["free", "pro", "enterprise"]

GENERATE = """
INSERT INTO contacts (
    workspace_id, id, version, first_name, last_name, email, phone, country, language, lifecycle,
    assignee, conversation_status, last_interacted_channel, channels, tags, created_at,
    last_incoming_message_at, last_outgoing_message_at, custom_fields, updated_at, changed_mask)
SELECT
    :ws, 'c' || lpad(n::text, 8, '0'), 1,
    'First' || (n % 997), 'Last' || (n % 991),
    CASE WHEN r1 < 0.6 THEN 'c' || n || '@example.com' END,
    CASE WHEN r2 < 0.8 THEN '+60' || (100000000 + n) END,
    CASE WHEN r3 < 0.8 THEN (CAST(:countries AS text[]))[1 + floor(r4 * 8)::int] END,
    CASE WHEN r5 < 0.7 THEN (CAST(:languages AS text[]))[1 + floor(r6 * 6)::int] END,
    (CAST(:lifecycles AS text[]))[1 + n % 4],
    (ARRAY[NULL, 'aisyah', 'ben', 'chen'])[1 + n % 4],
    CASE WHEN n % 2 = 0 THEN 'open' ELSE 'closed' END,
    (ARRAY['whatsapp', 'messenger', 'instagram', 'email', 'sms'])[1 + n % 5],
    CASE WHEN n % 3 = 0 THEN ARRAY['email'] ELSE ARRAY['whatsapp', 'email'] END,
    CASE WHEN r8 < 0.33 THEN '{}'::text[]
         WHEN r8 < 0.66 THEN ARRAY[(CAST(:tags AS text[]))[1 + floor(r9 * 6)::int]]
         ELSE ARRAY[(CAST(:tags AS text[]))[1 + floor(r9 * 3)::int], (CAST(:tags AS text[]))[4 + floor(r10 * 3)::int]] END,
    created,
    CASE WHEN r11 < 0.75 THEN created + r12 * (CAST(:now AS float8) - created) END,
    NULL,
    jsonb_build_object('plan', (CAST(:plans AS text[]))[1 + n % 3], 'orders', n % 41),
    :now, 0
FROM (
    SELECT *, CAST(:now AS float8) - CASE WHEN r13 < 0.03 THEN r14 * 7 * 86400 ELSE r14 * 365 * 86400 END AS created
    FROM (
        SELECT n, random() r1, random() r2, random() r3, random() r4, random() r5, random() r6,
               random() r8, random() r9, random() r10, random() r11, random() r12, random() r13, random() r14
        FROM generate_series(1, :count) AS n
    ) numbered
) randomised
"""


def generate_contacts(connection: Connection, workspace_id: str, count: int, now: float) -> None:
    """``count`` contacts ``c00000001``... in the workspace, set-wise (one INSERT ... SELECT),
    reproducibly (a fixed random seed): 3% created in the last 7 days, the rest over the last
    year; most with a country, a language, tags from :data:`TAGS`, a last incoming message;
    custom fields ``plan`` and ``orders``.  Nothing pending."""
    connection.execute(text("SELECT setseed(0.42)"))
    connection.execute(
        text(GENERATE),
        {"ws": workspace_id, "count": count, "now": now, "tags": TAGS, "countries": COUNTRIES,
         "languages": LANGUAGES, "lifecycles": LIFECYCLES, "plans": PLANS},
    )  # fmt: skip


def check_memberships(
    engine: Engine, workspace_id: str, predicates: dict[str, str], segments: dict[str, tuple[int, int]], **params: Any
) -> None:
    """Each segment's members (``segments``: key -> (segment id, rule version)) are exactly the
    contacts its hand-written SQL predicate (``predicates``, by the same key; ``params`` bound,
    e.g. ``now``) matches; exit naming the first that differs."""
    with engine.connect() as connection:
        for key, predicate in predicates.items():
            wrong = connection.scalar(
                text(
                    f"""SELECT count(*) FROM
                        (SELECT id FROM contacts WHERE workspace_id = :ws AND {predicate}) c
                        FULL JOIN (SELECT contact_id FROM memberships WHERE segment_id = :sid) m
                        ON m.contact_id = c.id
                        WHERE c.id IS NULL OR m.contact_id IS NULL"""
                ),
                {**params, "ws": workspace_id, "sid": segments[key][0]},
            )
            if wrong:
                at = f" at {params}" if params else ""
                raise SystemExit(f"memberships of {key!r} differ from its predicate for {wrong} contacts{at}")

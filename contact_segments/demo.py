"""``segments demo``: the whole product on the embedded default, in about ten seconds.

It creates a workspace with the five default segments, generates realistic contacts (Faker,
fixed seed, spread over the last year), shows the segments with their counts and filter badges,
adds a tag to a contact and shows it entering a segment, then advances the clock eight days and
shows contacts leaving "Contacts created <7 days ago" - and the events all of this produced.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from faker import Faker
from rich.console import Console
from rich.table import Table

from . import service
from .storage.schema import migrate

if TYPE_CHECKING:
    from .cli import Runtime

WORKSPACE = "demo"
DAY = 86_400
COUNTRIES = ["MY", "SG", "ID", "TH", "PH", "VN", "US", "GB"]
LANGUAGES = ["en", "ms", "id", "th", "zh", "vi"]
TAGS = ["promotion", "vip", "newsletter", "b2b", "churn-risk", "event-2026"]
CHANNELS = ["whatsapp", "messenger", "instagram", "email", "sms"]
LIFECYCLES = ["new lead", "hot lead", "customer", "cold"]


def iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat()


def generate_contacts(count: int, *, now: float, seed: int) -> Iterator[dict[str, Any]]:
    """Contacts created over the last year; most have talked to the business at some point."""
    fake = Faker()
    fake.seed_instance(seed)
    rng = random.Random(seed)
    for number in range(1, count + 1):
        created = now - rng.uniform(0, 365 * DAY) if rng.random() > 0.03 else now - rng.uniform(0, 7 * DAY)
        incoming = created + rng.uniform(0, now - created) if rng.random() < 0.75 else None
        outgoing = incoming + rng.uniform(0, 3600) if incoming is not None and rng.random() < 0.9 else None
        yield {
            "id": f"c{number:06d}",
            "version": 1,
            "first_name": fake.first_name(),
            "last_name": fake.last_name(),
            "email": fake.email() if rng.random() < 0.6 else None,
            "phone": fake.phone_number() if rng.random() < 0.8 else None,
            "country": rng.choice(COUNTRIES) if rng.random() < 0.8 else None,
            "language": rng.choice(LANGUAGES) if rng.random() < 0.7 else None,
            "lifecycle": rng.choice(LIFECYCLES),
            "assignee": rng.choice([None, "aisyah", "ben", "chen"]),
            "conversation_status": rng.choice(["open", "closed"]),
            "last_interacted_channel": rng.choice(CHANNELS),
            "channels": rng.sample(CHANNELS, rng.randint(1, 3)),
            "tags": rng.sample(TAGS, rng.choice([0, 0, 1, 1, 2, 3])),
            "created_at": iso(created),
            "last_incoming_message_at": iso(incoming) if incoming is not None else None,
            "last_outgoing_message_at": iso(outgoing) if outgoing is not None else None,
            "custom_fields": {"plan": rng.choice(["free", "pro", "enterprise"]), "orders": rng.randint(0, 40)},
        }


def run_demo(rt: Runtime, *, contact_count: int, seed: int) -> None:
    console = Console(highlight=False)
    now = rt.now()
    migrate(rt.engine)
    uow = rt.uow()
    service.delete_workspace(uow, WORKSPACE, missing_ok=True)
    workspace = service.create_workspace(uow, WORKSPACE, name="Demo", timezone="Asia/Kuala_Lumpur", now=now)
    console.rule(f"workspace {workspace.id!r} created with {workspace.segment_count} default segments")

    contacts = list(generate_contacts(contact_count, now=now, seed=seed))
    with rt.progress("upserting contacts", len(contacts)) as advance:
        for start in range(0, len(contacts), 1000):
            service.upsert_contacts(uow, WORKSPACE, contacts[start : start + 1000], now=now)
            advance(1000)
    promo = service.create_segment(
        uow,
        WORKSPACE,
        name="Malaysia promotion",
        rule=service.RuleInput(
            conditions={
                "op": "and",
                "conditions": [
                    {"category": "contact_field", "field": "country", "operator": "is_equal_to", "value": "MY"},
                    {"category": "contact_tag", "operator": "has_any_of", "value": ["promotion"]},
                ],
            }
        ),
        now=now,
    )
    console.rule(f"{len(contacts):,} contacts upserted; a segment of our own: {promo.name!r}")
    show_segments(console, service.list_segments(uow, WORKSPACE))

    marker = service.list_events(uow, WORKSPACE, limit=100_000)[-1].event_id
    target = next(c for c in contacts if c["country"] == "MY" and "promotion" not in c["tags"])
    changed = {**target, "version": 2, "tags": [*target["tags"], "promotion"]}
    service.upsert_contacts(uow, WORKSPACE, [changed], now=now)
    console.rule(f"tag 'promotion' added to {target['first_name']} {target['last_name']} ({target['id']})")
    for event in service.list_events(uow, WORKSPACE, after_event_id=marker):
        console.print(f"  {event.kind} segment {event.segment_id} ({event.cause})")

    later = now + 8 * DAY
    marker = service.list_events(uow, WORKSPACE, limit=100_000)[-1].event_id
    result = service.tick(uow, WORKSPACE, now=later)
    console.rule(f"8 days later: the tick re-evaluated {result.candidates} contacts near a time threshold")
    moved = Counter((e.segment_id, e.kind) for e in service.list_events(uow, WORKSPACE, after_event_id=marker, limit=100_000))
    names = {view.id: view.name for view in service.list_segments(uow, WORKSPACE)}
    for (segment_id, kind), count in sorted(moved.items()):
        console.print(f"  {count:>5} {kind} {names[segment_id]!r}")
    show_segments(console, service.list_segments(uow, WORKSPACE))

    events = service.list_events(uow, WORKSPACE, limit=1_000_000)
    kinds = Counter(e.kind for e in events)
    console.rule("events in the outbox")
    console.print(f"  {len(events):,} events: " + ", ".join(f"{n:,} {k}" for k, n in sorted(kinds.items())))
    for event in events[-5:]:
        who = event.contact_id or f"{event.member_count} members"
        console.print(f"  {event.event_id[:8]}  {event.kind:<8} {names[event.segment_id]!r:<30} {who} ({event.cause})")
    click.echo(f"\nTry: segments --now {iso(later)} segment explain -w {WORKSPACE} {promo.id} {target['id']}")


def show_segments(console: Console, views: list[service.SegmentView]) -> None:
    table = Table("id", "segment", "members", "filters")
    for view in views:
        table.add_row(str(view.id), view.name, f"{view.member_count:,}", f"[{view.filter_count}]")
    console.print(table)

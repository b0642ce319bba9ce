"""Membership events: the outbox, and its delivery to the host.

Events are written in the same transaction as the membership change they describe.  Delivery
takes them oldest first (so in order per contact), hands a batch to the host, and marks it
delivered only once the host returned: a host that raises gets the same events, with the same
ids, on the next attempt.  Delivery is therefore at least once; ``event_id`` lets a host drop
duplicates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..storage import MembershipEvent
from ..storage import queries as q
from .errors import NotFound
from .segments import get_workspace
from .uow import UnitOfWork

DELIVERY_BATCH = 500


@dataclass(frozen=True)
class EventView:
    event_id: str
    seq: int
    workspace_id: str
    segment_id: int
    contact_id: str | None
    kind: str
    cause: str
    rule_version: int
    occurred_at: float
    member_count: int | None

    @classmethod
    def of(cls, event: MembershipEvent) -> EventView:
        return cls(
            event_id=event.event_id,
            seq=event.seq,
            workspace_id=event.workspace_id,
            segment_id=event.segment_id,
            contact_id=event.contact_id,
            kind=event.kind,
            cause=event.cause,
            rule_version=event.rule_version,
            occurred_at=event.occurred_at,
            member_count=event.member_count,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_events(uow: UnitOfWork, workspace_id: str, *, after_event_id: str | None = None, limit: int = 1000) -> list[EventView]:
    """The workspace's events in order (delivered or not), after ``after_event_id`` if given."""
    with uow:
        get_workspace(uow, workspace_id)
        try:
            events = q.list_events(uow.session, workspace_id, after_event_id=after_event_id, limit=limit)
        except LookupError:
            raise NotFound("event", after_event_id, workspace_id) from None
        return [EventView.of(event) for event in events]


Deliver = Callable[[list[EventView]], None]


class DeliveryFailed(Exception):
    """The host's hook raised while receiving events; they stay in the outbox for a retry."""


def deliver_events(uow: UnitOfWork, workspace_id: str, deliver: Deliver, *, now: float, limit: int = DELIVERY_BATCH) -> int:
    """Hand the workspace's undelivered events to ``deliver`` in batches; return how many went.

    One deliverer per workspace at a time (a database lock), so per-contact order holds across
    workers.  If ``deliver`` raises, the batch is counted as attempted, stays undelivered, and
    :class:`DeliveryFailed` propagates for the caller to retry.
    """
    delivered = 0
    while True:
        with uow:
            if not q.try_lock_delivery(uow.session, workspace_id):
                return delivered  # another worker is delivering this workspace's events
            batch = q.fetch_undelivered_events(uow.session, workspace_id=workspace_id, limit=limit)
            if not batch:
                return delivered
            views = [EventView.of(event) for event in batch]
            seqs = [event.seq for event in batch]
            try:
                deliver(views)
            except Exception as error:
                q.record_failed_delivery(uow.session, seqs)
                uow.commit()
                raise DeliveryFailed(f"the host failed to take {len(views)} events: {error!r}") from error
            q.mark_events_delivered(uow.session, seqs, now=now)
            uow.commit()
            delivered += len(views)

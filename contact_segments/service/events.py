"""Membership events: the outbox, and its delivery to the host.

Events are written in the same transaction as the membership change they describe.  Delivery
takes them oldest first (so in order per contact), hands a batch to the host, and marks it
delivered only once the host returned: a host that raises gets the same events, with the same
ids, on the next attempt.  Delivery is therefore at least once; ``event_id`` lets a host drop
duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from ..storage import MembershipEvent, SegmentChange
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
Notify = Callable[[str, dict[str, object], str, str], None]
"""Tells the host of one segment change: (workspace id, the segment's id, name and rule
version, the change, the notification's unique id).  Four arguments since the id came (a
three-argument callable would fail every delivery, and be retried)."""


class DeliveryFailed(Exception):
    """The host's hook raised while receiving events; they stay in the outbox for a retry."""


def deliver_events(
    uow: UnitOfWork,
    workspace_id: str,
    deliver: Deliver | None,
    *,
    notify: Notify | None = None,
    now: float,
    limit: int = DELIVERY_BATCH,
) -> int:
    """Hand the workspace's undelivered segment notifications to ``notify``, one by one, and its
    undelivered events to ``deliver``, in batches; return how many events went.

    Either may be None: what it would take stays in its outbox (``segments events`` shows the
    events).  One deliverer per workspace at a time (a database lock), so order holds across
    workers: each contact's events in order, and notifications before the events that follow
    them (a segment's "created" before its "built"; see :func:`_deliver_batch`).

    A delivery that finds the lock taken (PostgreSQL) does not wait: the deliverer holding it
    may have fetched before the rows this one came for were committed, so it leaves that
    deliverer a request and tries the lock once more (:func:`queries.request_delivery`).
    Whoever holds the lock, once it has delivered everything and let go, takes the request and
    delivers again.  So another delivery running leaves nothing for the beat's recovery, and no
    worker waits on another's host; on PostgreSQL a host's hook that saves a contact through the
    engine inline gets that contact's events from the delivery calling it.  (On SQLite such a
    hook waits for the delivery's write lock: save after the hook returns.)  Every deliverer of
    a workspace should carry the same hooks, since it takes requests for both outboxes; one with
    neither hands nothing and takes nothing.

    If the host raises, what it was handed is counted as attempted, stays undelivered, and
    :class:`DeliveryFailed` propagates for the caller to retry (requests left meanwhile wait for
    that retry, like the rows behind the failed batch).
    """
    if deliver is None and notify is None:
        return 0
    handed = 0
    requested = False
    while True:
        with uow:
            if not q.try_lock_delivery(uow.session, workspace_id):
                if requested:
                    return handed  # the holder takes the request once it lets go
                q.request_delivery(uow.session, workspace_id)
                uow.commit()
                requested = True
                continue  # the holder may have let go before the request was there
            went = _deliver_batch(uow, workspace_id, deliver, notify, now=now, limit=limit)
            if went is not None:
                handed += went
                continue
        # Everything delivered, and the lock let go: a delivery that found it taken meanwhile
        # left a request.
        with uow:
            again = q.take_delivery_request(uow.session, workspace_id)
            uow.commit()
        if not again:
            return handed
        requested = False


def _deliver_batch(
    uow: UnitOfWork, workspace_id: str, deliver: Deliver | None, notify: Notify | None, *, now: float, limit: int
) -> int | None:
    """In the caller's transaction, which holds the delivery lock: hand the host one batch of
    notifications, or else of events, mark it delivered and commit; return how many events
    went, or None if there was nothing to hand.

    The notifications are fetched after the events: one committed before an event that the
    fetch found (a segment's "created" before its first build's "built") is then seen, and goes
    first.  If the host raises, the batch's failed attempt is counted and :class:`DeliveryFailed`
    raised."""
    session = uow.session
    events = q.fetch_undelivered_events(session, workspace_id, limit=limit) if deliver is not None else []
    changes = q.fetch_undelivered_events(session, workspace_id, limit=limit, outbox=SegmentChange) if notify is not None else []
    outbox: q.Outbox
    hand: Callable[[], None]
    if notify is not None and changes:
        outbox, rows = SegmentChange, changes
        hand = partial(_notify_each, notify, workspace_id, changes)
    elif deliver is not None and events:
        outbox, rows = MembershipEvent, events
        hand = partial(deliver, [EventView.of(event) for event in events])
    else:
        return None
    seqs = [row.seq for row in rows]
    try:
        hand()
    except Exception as error:
        q.record_failed_delivery(session, seqs, outbox=outbox)
        uow.commit()
        raise DeliveryFailed(f"the host failed to take {len(seqs)} {outbox.__tablename__}: {error!r}") from error
    q.mark_events_delivered(session, seqs, now=now, outbox=outbox)
    uow.commit()
    return len(seqs) if outbox is MembershipEvent else 0


def _notify_each(notify: Notify, workspace_id: str, changes: Sequence[SegmentChange]) -> None:
    for change in changes:
        segment = {"id": change.segment_id, "name": change.name, "rule_version": change.rule_version}
        notify(workspace_id, segment, change.change, change.change_id)

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


class DeliveryBusy(Exception):
    """Another deliverer held the workspace's outbox for longer than the wait (a slow host);
    what this delivery came for stays in the outbox, for a retry."""


DELIVERY_LOCK_WAIT = 10.0
"""Seconds a delivery waits for the workspace's deliverer before it (see :func:`deliver_events`)."""


def deliver_events(
    uow: UnitOfWork,
    workspace_id: str,
    deliver: Deliver | None,
    *,
    notify: Notify | None = None,
    now: float,
    limit: int = DELIVERY_BATCH,
    lock_wait: float = DELIVERY_LOCK_WAIT,
) -> int:
    """Hand the workspace's undelivered segment notifications to ``notify``, one by one, then
    its undelivered events to ``deliver``, in batches; return how many events went.

    Either may be None: what it would take stays in its outbox (``segments events`` shows the
    events).  One deliverer per workspace at a time (a database lock), so order holds across
    workers: a segment's "created" reaches the host before its "built" event, each contact's
    events in order.  A delivery that finds the lock taken waits for it, so what was written
    before it was sent is delivered now: the deliverer before may have looked before that was
    committed.  If it waits longer than ``lock_wait`` seconds, :class:`DeliveryBusy`
    propagates for the caller to retry.  If the host raises, what it was handed is counted as
    attempted, stays undelivered, and :class:`DeliveryFailed` propagates for the caller to retry.
    """
    if notify is not None:
        _drain(
            uow, workspace_id, SegmentChange, lambda changes: _notify_each(notify, workspace_id, changes),
            now=now, limit=limit, lock_wait=lock_wait,
        )  # fmt: skip
    if deliver is None:
        return 0
    return _drain(
        uow, workspace_id, MembershipEvent, lambda events: deliver([EventView.of(event) for event in events]),
        now=now, limit=limit, lock_wait=lock_wait,
    )  # fmt: skip


def _notify_each(notify: Notify, workspace_id: str, changes: Sequence[SegmentChange]) -> None:
    for change in changes:
        segment = {"id": change.segment_id, "name": change.name, "rule_version": change.rule_version}
        notify(workspace_id, segment, change.change, change.change_id)


def _drain(
    uow: UnitOfWork,
    workspace_id: str,
    outbox: q.Outbox,
    hand: Callable[[Sequence[Any]], None],
    *,
    now: float,
    limit: int,
    lock_wait: float,
) -> int:
    """Hand the workspace's undelivered rows of ``outbox`` to the host, batch by batch, each in
    a transaction holding the workspace's delivery lock; return how many went.  A batch the
    host took is marked delivered; if the host raises, the batch's failed attempt is counted
    and :class:`DeliveryFailed` raised.  Each batch waits for the deliverer before it
    (:func:`queries.lock_delivery`), up to ``lock_wait`` seconds, else :class:`DeliveryBusy`."""
    handed = 0
    while True:
        with uow:
            if not q.lock_delivery(uow.session, workspace_id, wait=lock_wait):
                raise DeliveryBusy(f"another deliverer held workspace {workspace_id!r}'s outbox for over {lock_wait} s")
            batch = q.fetch_undelivered_events(uow.session, workspace_id, limit=limit, outbox=outbox)
            if not batch:
                return handed
            seqs = [row.seq for row in batch]
            try:
                hand(batch)
            except Exception as error:
                q.record_failed_delivery(uow.session, seqs, outbox=outbox)
                uow.commit()
                raise DeliveryFailed(f"the host failed to take {len(seqs)} {outbox.__tablename__}: {error!r}") from error
            q.mark_events_delivered(uow.session, seqs, now=now, outbox=outbox)
            uow.commit()
            handed += len(seqs)

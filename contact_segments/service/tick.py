"""The tick: apply every time-based flip since the last tick, and only those.

"Contacts created <7 days ago" loses a contact at ``created_at + 7 days`` exactly, without the
contact changing.  For each segment whose rule reads ``now``, the rules layer lists its
comparisons of a timestamp with ``now ± N`` (:func:`~..rules.analysis.time_thresholds`); each
can change value between two instants only for contacts whose timestamp lies in a window of the
same width, which an index range query finds.  Those contacts alone are re-evaluated, so a tick
costs what the flips cost, not what the contacts cost.

The workspace's watermark (``last_tick_at``) moves in the tick's transaction, under the
workspace row's lock: ticks of a workspace run one after another, a missed beat is caught up by
the next tick's wider window, and no window is covered twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..storage import EventCause, Segment, setwise
from ..storage import queries as q
from .commands import DeliverEvents
from .contacts import workspace_segments
from .membership import Diff, compiled_segment, evaluate_contacts, flip_candidates, rebuild_batch
from .segments import get_workspace
from .uow import UnitOfWork


@dataclass(frozen=True)
class TickResult:
    workspace_id: str
    start: float | None
    end: float
    candidates: int
    entered: int
    exited: int
    skipped: bool = False


def tick(uow: UnitOfWork, workspace_id: str, *, now: float) -> TickResult:
    """Apply the flips of ``(last tick, now]`` to the workspace's time-relative segments."""
    with uow:
        window = q.open_tick_window(uow.session, workspace_id, now)
        if window is None:
            get_workspace(uow, workspace_id)  # an unknown workspace is an error, not "nothing to do"
            return TickResult(workspace_id, None, now, 0, 0, 0, skipped=True)
        diff = Diff()
        caught: dict[int, set[str]] = {}  # segment id -> the contacts its windows found
        windowed: list[Segment] = []
        for segment in workspace_segments(uow.session, workspace_id):
            compiled = compiled_segment(segment)  # cached per rule version
            if not compiled.uses_now:
                continue
            may_flip = flip_candidates(compiled, window.start, now) if window.start is not None else None
            if may_flip is None:
                # No watermark yet, or a rule whose clock use has no index window: reconcile in SQL.
                diff.extend(rebuild_batch(uow.session, segment, after=None, upto=None, now=now, cause=EventCause.TIME_PASSED))
                continue
            ids = set(setwise.contact_ids_where(uow.session, workspace_id, may_flip))
            windowed.append(segment)
            caught[segment.id] = ids
        diff.extend(_evaluate_caught(uow, workspace_id, windowed, caught, now=now))
        if diff:
            uow.add_command(DeliverEvents(workspace_id))
        uow.commit()
    candidates = sum(len(ids) for ids in caught.values())
    return TickResult(workspace_id, window.start, now, candidates, len(diff.entered), len(diff.exited))


def _evaluate_caught(
    uow: UnitOfWork, workspace_id: str, segments: list[Segment], caught: dict[int, set[str]], *, now: float
) -> Diff:
    """Evaluate each segment's caught contacts against that segment, and only that one.

    In one evaluation when that is exact: each contact is then given, as its changed fields,
    the fields read by the segments that caught it, so :func:`evaluate_contacts` evaluates it
    against those segments, and against any other that reads one of those fields.  So this
    checks that no such other segment exists for any contact (true of the defaults: "created
    <7 days ago" reads ``created_at``, "inactive >30 days" ``last_incoming_message_at``).
    Otherwise, one evaluation per segment.  Either way the same pairs are evaluated, at the
    same instant, with the same cause.
    """
    segments = [segment for segment in segments if caught[segment.id]]
    if not segments:
        return Diff()
    reads = {segment.id: compiled_segment(segment).reads for segment in segments}
    by_contact: dict[str, set[int]] = {}
    for segment_id, ids in caught.items():
        for contact_id in ids:
            by_contact.setdefault(contact_id, set()).add(segment_id)
    changed: dict[str, frozenset[str] | None] = {}
    for contact_id, catchers in by_contact.items():
        fields = frozenset().union(*(reads[segment_id] for segment_id in catchers))
        if {segment_id for segment_id, read in reads.items() if read & fields} != catchers:
            changed = {}
            break
        changed[contact_id] = fields
    if len(segments) == 1 or changed:
        return evaluate_contacts(
            uow.session, workspace_id, by_contact, now=now, cause=EventCause.TIME_PASSED, segments=segments,
            changed=changed or None,
        )  # fmt: skip
    diff = Diff()
    for segment in segments:
        diff.extend(
            evaluate_contacts(
                uow.session, workspace_id, caught[segment.id], now=now, cause=EventCause.TIME_PASSED, segments=[segment]
            )
        )
    return diff

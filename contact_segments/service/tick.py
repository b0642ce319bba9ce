"""The tick: apply every time-based flip since the last tick, and only those.

"Contacts created <7 days ago" loses a contact at ``created_at + 7 days`` exactly, without the
contact changing.  For each segment whose rule reads ``now``, the rules layer lists its
comparisons of a timestamp with ``now ± N`` (:func:`~..rules.analysis.time_thresholds`); each
can change value between two instants only for contacts whose timestamp lies in a window of the
same width, which an index range query finds.  Those contacts alone are compared with the
segment's rule in SQL, each membership looked up by key, and the flips written with their
events: on PostgreSQL all segments in one statement (:class:`~..storage.setwise.WindowFlips`).
So a tick costs what the window's contacts (about the flips) cost, not what all contacts cost.
A window of any width works the same way: a beat missed for days is caught up by one wider range.

That statement is built once per set of segments (and rule versions), with the window's ends
and ``now`` as parameters (the rules compiled with ``now`` in SQL: :func:`~..rules.rule_to_sql`),
and kept: a tick builds no SQL, it only runs it.

A segment whose use of the clock has no such window, and every time-relative segment at a
workspace's first tick, is reconciled over every contact instead.

The workspace's watermark (``last_tick_at``) moves in the tick's transaction, under the
workspace row's lock: ticks of a workspace run one after another, and no evaluation or deletion
of a contact, nor a rebuild batch, runs meanwhile (each share-locks the row first:
:func:`.segments.evaluation_instant`), so the tick writes its flips as their only writer; a
missed beat is caught up by the next tick's wider window, and no window is covered twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import ColumnElement, or_

from ..rules import InstantRequired, rule_to_sql
from ..storage import EventCause, contact_view_columns, setwise
from ..storage import queries as q
from .commands import DeliverEvents
from .contacts import workspace_segments
from .membership import CompiledSegment, Diff, compiled_segment, rebuild_batch
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
        windowed: list[tuple[CompiledSegment, tuple[bool, ...]]] = []
        for segment in workspace_segments(uow.session, workspace_id):
            compiled = compiled_segment(segment)  # cached per rule version
            if not compiled.uses_now:
                continue
            if window.start is None or _rule_at_now_parameter(compiled) is None:
                # No watermark yet, or no index window: reconcile everyone.
                diff.extend(rebuild_batch(uow.session, segment, after=None, upto=None, now=now, cause=EventCause.TIME_PASSED))
                continue
            windowed.append((compiled, _with_nulls(compiled, window.start, now)))
        candidates = entered = exited = 0
        if windowed:
            # Their only writer: this transaction holds the workspace row, which every other one share-locks first.
            flips = _window_flips(tuple(windowed))
            candidates, entered, exited = flips.apply(uow.session, workspace_id, start=window.start, now=now)
        if diff or entered or exited:
            uow.add_command(DeliverEvents(workspace_id))
        uow.commit()
    return TickResult(
        workspace_id, window.start, now, candidates, len(diff.entered) + entered, len(diff.exited) + exited
    )


@lru_cache(maxsize=4096)
def _rule_at_now_parameter(segment: CompiledSegment) -> ColumnElement[bool] | None:
    """The segment's rule as SQL at :data:`setwise.NOW`; None if the rule has no index window,
    or if its SQL needs the instant's value (a valid segment rule never does, unless it adds
    more than 10**15 seconds to ``now``)."""
    if not segment.thresholds:
        return None
    try:
        return rule_to_sql(json.loads(segment.rule_text), contact_view_columns(), now=setwise.NOW)
    except InstantRequired:
        return None


def _with_nulls(segment: CompiledSegment, start: float, now: float) -> tuple[bool, ...]:
    """For each of the rule's time thresholds (sorted), whether its window between ``start``
    and ``now`` holds a null timestamp (JavaScript compares null as 0: only near the epoch)."""
    return tuple(threshold.window(start, now).contains(None) for threshold in sorted(segment.thresholds))


@lru_cache(maxsize=512)
def _window_flips(windowed: tuple[tuple[CompiledSegment, tuple[bool, ...]], ...]) -> setwise.WindowFlips:
    """The tick's statements for these segments (each with :func:`_with_nulls`), built once:
    each segment's contacts in the windows of its thresholds between :data:`setwise.START` and
    :data:`setwise.NOW` (:meth:`TimeThreshold.window`, in SQL), compared with its rule there."""
    windows = []
    for segment, with_nulls in windowed:
        thresholds = sorted(segment.thresholds)
        among = or_(
            *(
                setwise.time_window_condition(
                    threshold.field, setwise.START + threshold.offset, setwise.NOW + threshold.offset,
                    include_low=threshold.low_inclusive, with_null=with_null,
                )  # fmt: skip
                for threshold, with_null in zip(thresholds, with_nulls, strict=True)
            )
        )
        condition = _rule_at_now_parameter(segment)
        assert condition is not None  # the tick windows only such segments
        windows.append(setwise.Window(segment.id, segment.rule_version, condition, among))
    return setwise.WindowFlips(windows, cause=EventCause.TIME_PASSED.value)

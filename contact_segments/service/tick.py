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

from ..rules import InstantRequired, TimeThreshold, rule_to_sql
from ..storage import EventCause, contact_view_columns, setwise
from ..storage import queries as q
from .commands import DeliverEvents
from .contacts import segments_of_rows
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
        windowed: list[_Windowed] = []
        for segment in segments_of_rows(workspace_id, window.segments):  # read and share-locked with the watermark
            compiled = compiled_segment(segment)  # cached per rule version
            if not compiled.uses_now:
                continue
            if window.start is None or not compiled.thresholds or _rule_at_now_parameter(compiled.rule_text) is None:
                # No watermark yet, or no index window: reconcile everyone.
                diff.extend(rebuild_batch(uow.session, segment, after=None, upto=None, now=now, cause=EventCause.TIME_PASSED))
                continue
            windowed.append(_Windowed.of(compiled, window.start, now))
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


@dataclass(frozen=True)
class _Windowed:
    """A segment the tick compares in the windows of its time thresholds: what its part of the
    tick's statement is built from, and so the statement's cache key."""

    segment_id: int
    rule_version: int
    rule_text: str
    thresholds: tuple[TimeThreshold, ...]
    with_nulls: tuple[bool, ...]
    """Per threshold, whether its window holds a null timestamp (JavaScript compares null as
    0: only for a window near the epoch)."""

    @classmethod
    def of(cls, segment: CompiledSegment, start: float, now: float) -> _Windowed:
        thresholds = tuple(sorted(segment.thresholds))
        with_nulls = tuple(threshold.window(start, now).contains(None) for threshold in thresholds)
        return cls(segment.id, segment.rule_version, segment.rule_text, thresholds, with_nulls)

    def window(self) -> setwise.Window:
        """The segment's :class:`setwise.Window` between :data:`setwise.START` and
        :data:`setwise.NOW`: the contacts in the windows of its thresholds
        (:meth:`TimeThreshold.window`, in SQL), compared with its rule there."""
        among = or_(
            *(
                setwise.time_window_condition(
                    threshold.field, setwise.START + threshold.offset, setwise.NOW + threshold.offset,
                    include_low=threshold.low_inclusive, with_null=with_null,
                )  # fmt: skip
                for threshold, with_null in zip(self.thresholds, self.with_nulls, strict=True)
            )
        )
        condition = _rule_at_now_parameter(self.rule_text)
        if condition is None:
            raise ValueError(f"segment {self.segment_id}: its rule's SQL needs the instant, it has no window")
        return setwise.Window(self.segment_id, self.rule_version, condition, among)


@lru_cache(maxsize=4096)
def _rule_at_now_parameter(rule_text: str) -> ColumnElement[bool] | None:
    """The rule as SQL at :data:`setwise.NOW`; None if its SQL needs the instant's value (a
    valid segment rule never does, unless it adds more than 10**15 seconds to ``now``)."""
    try:
        return rule_to_sql(json.loads(rule_text), contact_view_columns(), now=setwise.NOW)
    except InstantRequired:
        return None


WINDOW_FLIPS_CACHED = 4096
"""Sets of segments whose tick statements a process keeps (about one per workspace it ticks).
Beyond that, and beyond SQLAlchemy's own cache of compiled statements (an engine's
``query_cache_size``), a tick builds and compiles its statement again: right, only slower."""


@lru_cache(maxsize=WINDOW_FLIPS_CACHED)
def _window_flips(windowed: tuple[_Windowed, ...]) -> setwise.WindowFlips:
    """The tick's statements for these segments, built once."""
    return setwise.WindowFlips([segment.window() for segment in windowed], cause=EventCause.TIME_PASSED.value)

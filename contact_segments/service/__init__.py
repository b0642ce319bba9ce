"""The service layer: segment operations, membership, events, defaults, import/export.

Every operation is a plain function taking a :class:`UnitOfWork` first; entry points (the CLI,
Celery tasks, the pluggy plugin) build one with :func:`open_service` and call these.
"""

from .commands import Command, DeliverEvents, Dispatcher, EvaluatePending, RebuildSegment
from .contacts import (
    delete_contact,
    evaluate_pending,
    load_snapshots,
    record_message,
    store_snapshots,
    upsert_contacts,
    upsert_snapshots,
)
from .defaults import default_registry, seed_defaults
from .errors import DuplicateName, InvalidInput, LimitReached, NotFound, SegmentsError
from .events import DeliveryFailed, EventView, deliver_events, list_events
from .explain import explain
from .handlers import InlineDispatcher, handle_deliver, handle_evaluate, handle_rebuild
from .segments import (
    RuleInput,
    SegmentView,
    create_segment,
    delete_segment,
    edit_segment,
    iter_members,
    list_segments,
    preview_rule,
    rebuild_segment,
    rename_segment,
    save_as_new,
    segment_view,
)
from .tick import TickResult, tick
from .transfer import (
    MAX_EXPORT_BYTES,
    ON_CONFLICT,
    ExportCheck,
    ImportReport,
    SegmentOutcome,
    export_segments,
    export_too_large_message,
    import_segments,
    render_export,
    validate_export,
)
from .uow import UnitOfWork
from .workspaces import WorkspaceView, create_workspace, delete_workspace, list_workspaces

__all__ = [
    "MAX_EXPORT_BYTES",
    "ON_CONFLICT",
    "ExportCheck",
    "ImportReport",
    "SegmentOutcome",
    "export_segments",
    "export_too_large_message",
    "import_segments",
    "render_export",
    "validate_export",
    "Command",
    "DeliverEvents",
    "Dispatcher",
    "DuplicateName",
    "EvaluatePending",
    "DeliveryFailed",
    "EventView",
    "InlineDispatcher",
    "InvalidInput",
    "LimitReached",
    "NotFound",
    "RebuildSegment",
    "RuleInput",
    "SegmentView",
    "SegmentsError",
    "TickResult",
    "UnitOfWork",
    "WorkspaceView",
    "create_segment",
    "create_workspace",
    "default_registry",
    "delete_contact",
    "delete_segment",
    "delete_workspace",
    "deliver_events",
    "edit_segment",
    "evaluate_pending",
    "explain",
    "handle_deliver",
    "handle_evaluate",
    "handle_rebuild",
    "iter_members",
    "list_events",
    "list_segments",
    "list_workspaces",
    "load_snapshots",
    "preview_rule",
    "rebuild_segment",
    "record_message",
    "rename_segment",
    "save_as_new",
    "seed_defaults",
    "segment_view",
    "store_snapshots",
    "tick",
    "upsert_contacts",
    "upsert_snapshots",
]

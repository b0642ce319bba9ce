"""The relational schema, as SQLAlchemy 2 typed models.

Conventions:

* Every instant is a double-precision number of seconds since the epoch, with the meaning the contact
  evaluation view gives it, so a rule's bound ``now`` compares with stored columns directly.
* ``tags`` and ``channels`` are lists of strings: ``text[]`` with a GIN index on PostgreSQL, JSON text
  on SQLite (see :class:`StringList`).
* The migrations in ``migrations/versions`` create this schema; ``Base.metadata`` is only the ORM's
  view of it (and what the tests compare the migrated database with).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ColumnElement,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates
from sqlalchemy.types import TypeDecorator, TypeEngine

from contact_segments.rules.catalog import STRING_FIELDS, STRING_LIST_FIELDS, TIMESTAMP_FIELDS
from contact_segments.storage.ids import new_uuid7

MAX_SEGMENTS_PER_WORKSPACE = 500
"""The per-workspace segment limit, enforced by a CHECK on ``workspaces.segment_count``."""

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class StringList(TypeDecorator[list[str]]):
    """A list of strings: ``text[]`` on PostgreSQL, a JSON array (text) elsewhere; None is NULL."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(Text()))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def process_bind_param(self, value: Iterable[str] | None, dialect: Dialect) -> list[str] | None:
        return None if value is None else list(value)  # a tuple would reach psycopg as a record

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name == "postgresql":
            return None  # psycopg gives a text[] as a list already; ARRAY's processor would copy it
        return super().result_processor(dialect, coltype)


JSONDocument = JSON().with_variant(postgresql.JSONB(), "postgresql")
"""A JSON object that SQL may look into: JSONB on PostgreSQL."""

AutoIncrementBigInteger = BigInteger().with_variant(Integer(), "sqlite")
"""BIGINT, except on SQLite, where only ``INTEGER PRIMARY KEY`` autoincrements."""


def postgresql_only(index: Index) -> Index:
    """Mark ``index`` as PostgreSQL's alone (for DDL and for migration autogenerate)."""
    index.info["dialect"] = "postgresql"
    return index.ddl_if(dialect="postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class EventKind(StrEnum):
    ENTERED = "entered"
    EXITED = "exited"
    BUILT = "built"


class EventCause(StrEnum):
    CONTACT_CHANGED = "contact_changed"
    CONTACT_DELETED = "contact_deleted"
    RULE_EDITED = "rule_edited"
    TIME_PASSED = "time_passed"
    BUILT = "built"
    SWEEP = "sweep"


def segment_name_key(name: str) -> str:
    """The form two segment names are compared in: trimmed and case-folded."""
    return name.strip().casefold()


class Workspace(Base):
    __tablename__ = "workspaces"
    __table_args__ = (
        CheckConstraint(
            f"segment_count BETWEEN 0 AND {MAX_SEGMENTS_PER_WORKSPACE}", name="segment_count_range"
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(Text, default="UTC", server_default="UTC")
    segment_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_tick_at: Mapped[float | None] = mapped_column(Double)
    change_epoch: Mapped[int] = mapped_column(BigInteger, default=1, server_default=text("1"))
    """SQLite only: the stamp its trigger gives a changed contact; a rebuild advances it (see
    :mod:`.change_stamps`)."""
    created_at: Mapped[float] = mapped_column(Double)


class Contact(Base):
    """The plugin's snapshot of a host contact: one typed column per field of the evaluation view."""

    __tablename__ = "contacts"
    __table_args__ = (
        Index("ix_contacts_workspace_id_created_at", "workspace_id", "created_at"),
        Index(
            "ix_contacts_workspace_id_last_incoming_message_at",
            "workspace_id",
            "last_incoming_message_at",
        ),
        Index(
            "ix_contacts_workspace_id_last_outgoing_message_at",
            "workspace_id",
            "last_outgoing_message_at",
        ),
        postgresql_only(Index("ix_contacts_tags", "tags", postgresql_using="gin")),
        Index("ix_contacts_workspace_id_change_stamp", "workspace_id", "change_stamp"),
    )

    workspace_id: Mapped[str] = mapped_column(
        Text, ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)

    first_name: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    country: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(Text)
    lifecycle: Mapped[str | None] = mapped_column(Text)
    assignee: Mapped[str | None] = mapped_column(Text)
    conversation_status: Mapped[str | None] = mapped_column(Text)
    last_interacted_channel: Mapped[str | None] = mapped_column(Text)
    channels: Mapped[list[str]] = mapped_column(StringList, default=list)
    tags: Mapped[list[str]] = mapped_column(StringList, default=list)
    created_at: Mapped[float | None] = mapped_column(Double)
    last_incoming_message_at: Mapped[float | None] = mapped_column(Double)
    last_outgoing_message_at: Mapped[float | None] = mapped_column(Double)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)

    updated_at: Mapped[float] = mapped_column(Double)
    """When this snapshot was stored (not a field of the view)."""
    changed_mask: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    """The view fields the last stored write changed, one bit per field of :data:`TRACKED_FIELDS`:
    how the upsert hands them to :class:`PendingChange`.  Not indexed, so it costs nothing more
    than the write it comes with."""
    change_stamp: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    """When the snapshot last changed, set by the database's trigger on every write of a view
    field, whoever writes the row. See :mod:`.change_stamps`."""


CONTACT_VIEW_FIELDS: tuple[str, ...] = ("id", *STRING_FIELDS, *STRING_LIST_FIELDS, *TIMESTAMP_FIELDS, "custom_fields")
"""The fields of the contact evaluation view (``now`` aside), each a column of ``contacts``."""


TRACKED_FIELDS: tuple[str, ...] = tuple(name for name in CONTACT_VIEW_FIELDS if name != "id")
"""The fields whose changes are tracked as pending, bit ``i`` standing for ``TRACKED_FIELDS[i]``
(``custom_fields`` for a change to any custom field).  Stored masks depend on this order, so a
migration that changes it must also mark every contact with pending changes as all-pending."""

ALL_PENDING = (1 << len(TRACKED_FIELDS)) - 1
"""Every tracked field pending: a new contact."""


def contact_view_columns() -> dict[str, ColumnElement[Any]]:
    """Each evaluation view field's column: what the SQL rule compiler reads for a variable."""
    columns = Contact.__table__.c
    return {name: columns[name] for name in CONTACT_VIEW_FIELDS}


class ContactTombstone(Base):
    """A deleted contact's last stored version: a snapshot no newer than it, arriving after the
    deletion (a host's retry, a late message), is stale and does not bring the contact back.

    No foreign key, like the outboxes' ``workspace_id``: :func:`~.queries.delete_workspace_rows`
    removes a deleted workspace's tombstones."""

    __tablename__ = "contact_tombstones"

    workspace_id: Mapped[str] = mapped_column(Text, primary_key=True)
    contact_id: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    deleted_at: Mapped[float] = mapped_column(Double)


class PendingChange(Base):
    """A contact whose memberships await evaluation, with the view fields changed since they were
    last evaluated (one bit per field of :data:`TRACKED_FIELDS`).  See :mod:`.pending_changes`.

    A narrow table of its own rather than a column of ``contacts``: taking a contact's pending
    change deletes this small row, where clearing an indexed column would write a new version
    of the wide contact row and of every one of its index entries.  No foreign key, like the
    tombstones."""

    __tablename__ = "pending_changes"

    workspace_id: Mapped[str] = mapped_column(Text, primary_key=True)
    contact_id: Mapped[str] = mapped_column(Text, primary_key=True)
    mask: Mapped[int] = mapped_column(BigInteger)


class DeliveryRequest(Base):
    """A workspace whose outboxes a delivery came for while another deliverer held them: that
    deliverer, once it lets go, takes the request and delivers again (see
    :func:`~.queries.request_delivery`).  No foreign key to ``workspaces``, like the outboxes'
    ``workspace_id``: :func:`~.queries.delete_workspace_rows` removes it."""

    __tablename__ = "delivery_requests"

    workspace_id: Mapped[str] = mapped_column(Text, primary_key=True)


class Segment(Base):
    __tablename__ = "segments"
    __table_args__ = (
        # The name rule, enforced by the database so concurrent creators cannot break it.
        UniqueConstraint("workspace_id", "name_key"),
        {"sqlite_autoincrement": True},  # never reuse a deleted segment's id
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(Text, ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    name_key: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="", server_default=text("''"))
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    conditions: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    is_default: Mapped[bool] = mapped_column(default=False, server_default=false())
    default_key: Mapped[str | None] = mapped_column(Text)
    rule_version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    built_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    """The rule version the memberships were last rebuilt for (0: never built); behind
    ``rule_version`` while a rebuild is due, which the beat checks so no rebuild is lost."""
    built_stamp: Mapped[int | None] = mapped_column(BigInteger)
    """How far the last complete rebuild read: contacts stamped at or after it may have changed
    since (see :mod:`.change_stamps`); None if not known, so the next rebuild reads everyone."""
    built_from: Mapped[float | None] = mapped_column(Double)
    built_until: Mapped[float | None] = mapped_column(Double)
    """The earliest and latest instants (``now``) the last complete rebuild evaluated the rule at."""
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)

    @validates("name")
    def _keep_name_key(self, _key: str, name: str) -> str:
        self.name_key = segment_name_key(name)
        return name


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (
        # A contact's memberships, read from the index alone (see migration 0002): an
        # evaluation that reads first, explain, a contact's deletion.
        Index("ix_memberships_workspace_id_contact_id_segment_id", "workspace_id", "contact_id", "segment_id"),
    )

    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True)
    contact_id: Mapped[str] = mapped_column(Text, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(Text)
    since: Mapped[float] = mapped_column(Double)


def undelivered_index(table_name: str) -> Index:
    """An outbox's index of what is waiting for delivery, oldest first per workspace (small: a
    delivered row leaves it)."""
    where = text("delivered_at IS NULL")
    return Index(f"ix_{table_name}_undelivered", "workspace_id", "seq", postgresql_where=where, sqlite_where=where)


class MembershipEvent(Base):
    """The outbox: written in the membership's transaction, delivered to the host at least once."""

    __tablename__ = "membership_events"
    __table_args__ = (
        CheckConstraint("kind IN ('entered', 'exited', 'built')", name="kind"),
        CheckConstraint("(kind = 'built') = (contact_id IS NULL)", name="contact_unless_built"),
        undelivered_index("membership_events"),
        Index("ix_membership_events_workspace_id_seq", "workspace_id", "seq"),
        {"sqlite_autoincrement": True},  # seq only grows, even after delivered events are purged
    )

    seq: Mapped[int] = mapped_column(AutoIncrementBigInteger, primary_key=True)
    event_id: Mapped[str] = mapped_column(Text, unique=True, default=new_uuid7)
    workspace_id: Mapped[str] = mapped_column(Text)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    contact_id: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    cause: Mapped[str] = mapped_column(Text)
    rule_version: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[float] = mapped_column(Double)
    member_count: Mapped[int | None] = mapped_column(Integer)
    delivered_at: Mapped[float | None] = mapped_column(Double)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class SegmentChange(Base):
    """The outbox of segment notifications ("created", "edited", "renamed", "deleted"): written in
    the segment's transaction, delivered to the host at least once, like membership events.

    No foreign keys, like the events' ``workspace_id``: a deleted segment's notification
    outlives it, and a key check on ``workspaces`` would make the segment's transaction wait for
    a tick holding the workspace row while the tick waits for the segment (a deadlock).
    :func:`~.queries.delete_workspace_rows` removes a deleted workspace's rows (and tombstones)."""

    __tablename__ = "segment_changes"
    __table_args__ = (
        CheckConstraint("change IN ('created', 'edited', 'renamed', 'deleted')", name="change"),
        undelivered_index("segment_changes"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(AutoIncrementBigInteger, primary_key=True)
    change_id: Mapped[str] = mapped_column(Text, unique=True, default=new_uuid7)
    """Unique, for the host to drop a notification delivered again."""
    workspace_id: Mapped[str] = mapped_column(Text)
    segment_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text)
    rule_version: Mapped[int] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[float] = mapped_column(Double)
    delivered_at: Mapped[float | None] = mapped_column(Double)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class DefaultRegistryEntry(Base):
    """Records that a default segment was seeded, so it is never seeded twice."""

    __tablename__ = "default_registry"

    workspace_id: Mapped[str] = mapped_column(
        Text, ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    default_key: Mapped[str] = mapped_column(Text, primary_key=True)
    registry_version: Mapped[int] = mapped_column(Integer)
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="SET NULL"))

"""Change stamps: the database marks each contact with when its snapshot last changed.

``contacts.change_stamp`` is set by a trigger on every insert and on every update of a field of
the evaluation view, whoever writes the row.  A segment's rebuild records how far its reading
reached (``segments.built_stamp``) and the instants it evaluated at (``built_from``,
``built_until``), so the next rebuild of the same rule compares only the contacts stamped since,
and those a time window says may have flipped (see ``storage/change_stamps.py``).

* PostgreSQL stamps with the writing transaction's id (``pg_current_xact_id()``); a rebuild's
  stamp is its snapshot's ``xmin``, below which every transaction had ended.
* SQLite runs one writer at a time: the stamp is the workspace's ``change_epoch``, which each
  rebuild advances in the transaction that reads.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEW_COLUMNS = (
    "version", "first_name", "last_name", "email", "phone", "country", "language", "lifecycle", "assignee",
    "conversation_status", "last_interacted_channel", "channels", "tags", "created_at",
    "last_incoming_message_at", "last_outgoing_message_at", "custom_fields",
)  # fmt: skip
"""The columns whose update stamps the contact: the snapshot's version and every field of the
evaluation view as of this revision (a test checks them against the models)."""

POSTGRESQL_UP = [
    """
    CREATE FUNCTION contacts_stamp_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.change_stamp := pg_current_xact_id()::text::bigint;
        RETURN NEW;
    END
    $$
    """,
    f"""
    CREATE TRIGGER contacts_stamp_change BEFORE INSERT OR UPDATE OF {", ".join(VIEW_COLUMNS)} ON contacts
    FOR EACH ROW EXECUTE FUNCTION contacts_stamp_change()
    """,
]
POSTGRESQL_DOWN = [
    "DROP TRIGGER contacts_stamp_change ON contacts",
    "DROP FUNCTION contacts_stamp_change()",
]

_SQLITE_STAMP = """
    BEGIN
        UPDATE contacts SET change_stamp = (SELECT change_epoch FROM workspaces WHERE id = NEW.workspace_id)
        WHERE workspace_id = NEW.workspace_id AND id = NEW.id;
    END
"""
SQLITE_UP = [
    f"CREATE TRIGGER contacts_stamp_insert AFTER INSERT ON contacts FOR EACH ROW {_SQLITE_STAMP}",
    f"CREATE TRIGGER contacts_stamp_update AFTER UPDATE OF {', '.join(VIEW_COLUMNS)} ON contacts FOR EACH ROW {_SQLITE_STAMP}",
]
SQLITE_DOWN = ["DROP TRIGGER contacts_stamp_update", "DROP TRIGGER contacts_stamp_insert"]


def upgrade() -> None:
    op.add_column("contacts", sa.Column("change_stamp", sa.BigInteger(), server_default=sa.text("0"), nullable=False))
    op.create_index(op.f("ix_contacts_workspace_id_change_stamp"), "contacts", ["workspace_id", "change_stamp"])
    op.add_column("workspaces", sa.Column("change_epoch", sa.BigInteger(), server_default=sa.text("1"), nullable=False))
    with op.batch_alter_table("segments") as batch:
        batch.add_column(sa.Column("built_stamp", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("built_from", sa.Double(), nullable=True))
        batch.add_column(sa.Column("built_until", sa.Double(), nullable=True))
    for statement in POSTGRESQL_UP if op.get_bind().dialect.name == "postgresql" else SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    for statement in POSTGRESQL_DOWN if op.get_bind().dialect.name == "postgresql" else SQLITE_DOWN:
        op.execute(statement)
    with op.batch_alter_table("segments") as batch:
        batch.drop_column("built_until")
        batch.drop_column("built_from")
        batch.drop_column("built_stamp")
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_column("change_epoch")
    op.drop_index(op.f("ix_contacts_workspace_id_change_stamp"), table_name="contacts")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("change_stamp")

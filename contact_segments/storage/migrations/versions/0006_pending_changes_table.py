"""Pending changes in a narrow table of their own (``pending_changes``).

Until now a contact's pending fields were a column of ``contacts`` (``pending_mask``), found by a
partial index on it.  Taking a contact's changes cleared the column, and because the column was in
that index's predicate, every take wrote a new version of the wide contact row and of each of its
index entries (the tags' GIN index included).  Now taking deletes a small row; the contact's
column becomes ``changed_mask``, the fields its last stored write changed, which the upsert
returns to fill the new table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_changes",
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=False),
        sa.Column("mask", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "contact_id", name=op.f("pk_pending_changes")),
    )
    op.execute(
        "INSERT INTO pending_changes (workspace_id, contact_id, mask) "
        "SELECT workspace_id, id, pending_mask FROM contacts WHERE pending_mask <> 0"
    )
    op.drop_index("ix_contacts_pending", table_name="contacts")
    op.alter_column("contacts", "pending_mask", new_column_name="changed_mask")


def downgrade() -> None:
    op.alter_column("contacts", "changed_mask", new_column_name="pending_mask")
    op.execute("UPDATE contacts SET pending_mask = 0")
    op.execute(
        "UPDATE contacts SET pending_mask = pending_changes.mask FROM pending_changes "
        "WHERE pending_changes.workspace_id = contacts.workspace_id AND pending_changes.contact_id = contacts.id"
    )
    op.create_index(
        "ix_contacts_pending",
        "contacts",
        ["workspace_id", "id"],
        postgresql_where=sa.text("pending_mask <> 0"),
        sqlite_where=sa.text("pending_mask <> 0"),
    )
    op.drop_table("pending_changes")

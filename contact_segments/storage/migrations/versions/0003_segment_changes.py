"""The outbox of segment notifications (``segment_changes``).

A segment's creation, edit, rename or deletion is recorded in the segment's transaction and
delivered to the host like membership events, so a notification lost with the broker's queue is
sent again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

big_serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "segment_changes",
        sa.Column("seq", big_serial, nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("change", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.Double(), nullable=False),
        sa.Column("delivered_at", sa.Double(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint(
            "change IN ('created', 'edited', 'renamed', 'deleted')", name=op.f("ck_segment_changes_change")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_segment_changes")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_segment_changes_undelivered"),
        "segment_changes",
        ["workspace_id", "seq"],
        postgresql_where=sa.text("delivered_at IS NULL"),
        sqlite_where=sa.text("delivered_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_segment_changes_undelivered"), table_name="segment_changes")
    op.drop_table("segment_changes")

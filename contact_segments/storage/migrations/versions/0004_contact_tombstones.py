"""Tombstones of deleted contacts (``contact_tombstones``).

A snapshot no newer than a deleted contact's last stored version is stale and must not bring it
back into its segments; the tombstone keeps that version.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "contact_tombstones",
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "contact_id", name=op.f("pk_contact_tombstones")),
    )


def downgrade() -> None:
    op.drop_table("contact_tombstones")

"""Delivery requests (``delivery_requests``): a delivery that finds another deliverer holding a
workspace's outboxes leaves one for it, instead of leaving the rows it came for to the beat.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_requests",
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_delivery_requests")),
    )


def downgrade() -> None:
    op.drop_table("delivery_requests")

"""A contact's memberships from the index alone: ``segment_id`` joins the (workspace, contact) index.

Evaluating a batch of changed contacts reads each one's memberships by (workspace_id,
contact_id).  With ``segment_id`` in the index that is an index-only scan; without it, a heap
fetch per membership (about 5 us each, most of a 50-segment evaluation's reading).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_memberships_workspace_id_contact_id_segment_id"), "memberships", ["workspace_id", "contact_id", "segment_id"]
    )
    op.drop_index(op.f("ix_memberships_workspace_id_contact_id"), table_name="memberships")


def downgrade() -> None:
    op.create_index(op.f("ix_memberships_workspace_id_contact_id"), "memberships", ["workspace_id", "contact_id"])
    op.drop_index(op.f("ix_memberships_workspace_id_contact_id_segment_id"), table_name="memberships")

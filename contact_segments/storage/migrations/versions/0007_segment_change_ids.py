"""Segment notifications get a unique id (``segment_changes.change_id``).

They are delivered at least once, like membership events, so the host needs an id to drop one
it has seen.  Rows already in the outbox get one too.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("segment_changes", sa.Column("change_id", sa.Text(), nullable=True))
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        op.execute("UPDATE segment_changes SET change_id = gen_random_uuid()::text")
    else:
        changes = sa.table("segment_changes", sa.column("seq", sa.BigInteger()), sa.column("change_id", sa.Text()))
        ids = [{"row": seq, "id": str(uuid.uuid4())} for seq in connection.execute(sa.select(changes.c.seq)).scalars()]
        if ids:
            connection.execute(changes.update().where(changes.c.seq == sa.bindparam("row")).values(change_id=sa.bindparam("id")), ids)
    # SQLite rebuilds the table: say again that its seq is AUTOINCREMENT (never reused).
    with op.batch_alter_table("segment_changes", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.alter_column("change_id", existing_type=sa.Text(), nullable=False)
        batch.create_unique_constraint(op.f("uq_segment_changes_change_id"), ["change_id"])


def downgrade() -> None:
    with op.batch_alter_table("segment_changes", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_constraint(op.f("uq_segment_changes_change_id"), type_="unique")
        batch.drop_column("change_id")

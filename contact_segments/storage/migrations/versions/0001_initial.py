"""The initial schema: workspaces, contacts, segments, memberships, the event outbox, the default registry.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types as this revision defines them (a migration does not import the models, which move on).
string_list = sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")
json_document = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
big_serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("timezone", sa.Text(), server_default="UTC", nullable=False),
        sa.Column("segment_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_tick_at", sa.Double(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.CheckConstraint("segment_count BETWEEN 0 AND 500", name=op.f("ck_workspaces_segment_count_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspaces")),
    )

    op.create_table(
        "contacts",
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.Column("country", sa.Text(), nullable=True),
        sa.Column("language", sa.Text(), nullable=True),
        sa.Column("lifecycle", sa.Text(), nullable=True),
        sa.Column("assignee", sa.Text(), nullable=True),
        sa.Column("conversation_status", sa.Text(), nullable=True),
        sa.Column("last_interacted_channel", sa.Text(), nullable=True),
        sa.Column("channels", string_list, nullable=False),
        sa.Column("tags", string_list, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=True),
        sa.Column("last_incoming_message_at", sa.Double(), nullable=True),
        sa.Column("last_outgoing_message_at", sa.Double(), nullable=True),
        sa.Column("custom_fields", json_document, nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("pending_mask", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_contacts_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_contacts")),
    )
    for column in ("created_at", "last_incoming_message_at", "last_outgoing_message_at"):
        op.create_index(op.f(f"ix_contacts_workspace_id_{column}"), "contacts", ["workspace_id", column])
    if op.get_context().dialect.name == "postgresql":
        op.create_index(op.f("ix_contacts_tags"), "contacts", ["tags"], postgresql_using="gin")
        op.execute(JS_NUMBER_FUNCTION)
    op.create_index(
        op.f("ix_contacts_pending"),
        "contacts",
        ["workspace_id", "id"],
        postgresql_where=sa.text("pending_mask <> 0"),
        sqlite_where=sa.text("pending_mask <> 0"),
    )

    op.create_table(
        "segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("name_key", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=True),
        sa.Column("is_default", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("default_key", sa.Text(), nullable=True),
        sa.Column("rule_version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("built_version", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_segments_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("workspace_id", "name_key", name=op.f("uq_segments_workspace_id_name_key")),
        sqlite_autoincrement=True,
    )

    op.create_table(
        "memberships",
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("since", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_memberships_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("segment_id", "contact_id", name=op.f("pk_memberships")),
    )
    op.create_index(
        op.f("ix_memberships_workspace_id_contact_id"), "memberships", ["workspace_id", "contact_id"]
    )

    op.create_table(
        "membership_events",
        sa.Column("seq", big_serial, nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.Double(), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=True),
        sa.Column("delivered_at", sa.Double(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("kind IN ('entered', 'exited', 'built')", name=op.f("ck_membership_events_kind")),
        sa.CheckConstraint(
            "(kind = 'built') = (contact_id IS NULL)",
            name=op.f("ck_membership_events_contact_unless_built"),
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_membership_events_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_membership_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_membership_events_event_id")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_membership_events_undelivered"),
        "membership_events",
        ["workspace_id", "seq"],
        postgresql_where=sa.text("delivered_at IS NULL"),
        sqlite_where=sa.text("delivered_at IS NULL"),
    )
    op.create_index(
        op.f("ix_membership_events_workspace_id_seq"), "membership_events", ["workspace_id", "seq"]
    )

    op.create_table(
        "default_registry",
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("default_key", sa.Text(), nullable=False),
        sa.Column("registry_version", sa.Integer(), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_default_registry_segment_id_segments"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_default_registry_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "default_key", name=op.f("pk_default_registry")),
    )


JS_NUMBER_FUNCTION = r"""
CREATE OR REPLACE FUNCTION js_number(value text) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
-- JavaScript's Number(value) for a string; NULL stands for NaN. See rules/sql.py.
DECLARE
    base integer;
    digit text;
    result double precision := 0;
    t text := btrim(value, E' \t\n\r\f\u000b\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff');
BEGIN
    IF t = '' THEN
        RETURN 0;
    ELSIF t ~ '^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$' THEN
        BEGIN
            RETURN t::double precision;
        EXCEPTION WHEN numeric_value_out_of_range THEN
            -- Beyond a double: JavaScript gives 0 for an underflow, +-Infinity for an overflow.
            BEGIN
                IF abs(t::numeric) < 1 THEN
                    RETURN 0;
                END IF;
            EXCEPTION WHEN OTHERS THEN  -- beyond numeric too: only the exponent's sign tells
                IF t ~ '[eE]-' THEN
                    RETURN 0;
                END IF;
            END;
            RETURN CASE WHEN left(t, 1) = '-' THEN '-Infinity'::double precision
                        ELSE 'Infinity'::double precision END;
        END;
    ELSIF t ~ '^[+-]?Infinity$' THEN
        RETURN t::double precision;
    ELSIF t ~ '^0([xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)$' THEN
        base := CASE lower(substr(t, 2, 1)) WHEN 'x' THEN 16 WHEN 'o' THEN 8 ELSE 2 END;
        FOREACH digit IN ARRAY regexp_split_to_array(lower(substr(t, 3)), '') LOOP
            result := result * base + (position(digit IN '0123456789abcdef') - 1);
        END LOOP;
        RETURN result;
    END IF;
    RETURN NULL;
END
$$;
"""


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS js_number(text)")
    for table in (
        "default_registry",
        "membership_events",
        "memberships",
        "segments",
        "contacts",
        "workspaces",
    ):
        op.drop_table(table)  # drops its indexes too

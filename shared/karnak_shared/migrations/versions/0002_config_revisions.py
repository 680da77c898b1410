"""Configuration revisions: the routing configuration's immutable, numbered versions (DESIGN.md section 14).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ORIGINS = ("console", "api", "apply", "bootstrap", "rollback", "file")
_IMMUTABLE = "config revisions are immutable: store a new revision instead"


def upgrade() -> None:
    op.create_table(
        "config_revisions",
        sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("checksum", sa.String(71), nullable=False),
        sa.CheckConstraint(
            "origin IN (" + ", ".join(f"'{origin}'" for origin in _ORIGINS) + ")", name="config_revisions_origin"
        ),
    )
    # Immutable in the database itself, whoever connects: a revision is history, and services compare
    # checksums to know what they run.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION config_revisions_immutable() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{_IMMUTABLE}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER config_revisions_immutable BEFORE UPDATE OR DELETE ON config_revisions "
            "FOR EACH ROW EXECUTE FUNCTION config_revisions_immutable()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER config_revisions_no_{action.lower()} BEFORE {action} ON config_revisions "
                f"BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER config_revisions_immutable ON config_revisions")
        op.execute("DROP FUNCTION config_revisions_immutable()")
    op.drop_table("config_revisions")

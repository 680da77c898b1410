"""The console's accounts, API tokens, audit trail and signing keys; patients' names in the pseudonym cache.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Karnak's CSV import dropped the patients' names; the console keeps them for who manages the list.
    with op.batch_alter_table("pseudonyms") as table:
        table.add_column(sa.Column("first_name", sa.String(256), nullable=True))
        table.add_column(sa.Column("last_name", sa.String(256), nullable=True))
    op.create_table(
        "console_users",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        # argon2 hash; NULL for accounts that sign in through OpenID Connect only.
        sa.Column("password_hash", sa.String(256), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('admin', 'operator', 'viewer')", name="console_users_role"),
        sa.CheckConstraint("source IN ('local', 'oidc')", name="console_users_source"),
    )
    op.create_table(
        "console_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        # SHA-256 of the token's random part: tokens carry 256 bits, a slow hash would add nothing.
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('admin', 'operator', 'viewer')", name="console_tokens_role"),
    )
    op.create_table(
        "console_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("actor", sa.String(256), nullable=False, index=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("client", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object", sa.String(512), nullable=False, index=True),
        sa.Column("revision", sa.Integer, nullable=True),
        # What changed, secrets masked: [{path, kind, before, after}].
        sa.Column("diff", sa.JSON, nullable=False),
        sa.CheckConstraint("origin IN ('api', 'console', 'cli')", name="console_audit_origin"),
    )
    op.create_table(
        "console_keys",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("console_keys")
    op.drop_table("console_audit")
    op.drop_table("console_tokens")
    op.drop_table("console_users")
    with op.batch_alter_table("pseudonyms") as table:
        table.drop_column("last_name")
        table.drop_column("first_name")

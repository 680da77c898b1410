"""Pseudonym cache and Kheops shares.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pseudonyms",
        sa.Column("project", sa.String(128), primary_key=True),
        sa.Column("patient_id", sa.String(256), primary_key=True),
        sa.Column("issuer_of_patient_id", sa.String(256), primary_key=True),
        sa.Column("pseudonym", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "kheops_shares",
        sa.Column("destination", sa.String(64), primary_key=True),
        sa.Column("album", sa.String(512), primary_key=True),
        sa.Column("series_instance_uid", sa.String(64), primary_key=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("shared_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kheops_shares")
    op.drop_table("pseudonyms")

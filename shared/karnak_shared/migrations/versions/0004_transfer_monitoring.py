"""Transfer monitoring: one row per series and destination, its instances, reasons and counted events.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"  # the console's accounts (0003) landed after this was written
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transfer_series",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("forward_node", sa.String(16), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("study_uid_sent", sa.String(64), nullable=False),
        sa.Column("series_uid_sent", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("accession_number", sa.String(64), nullable=True),
        sa.Column("patient_id_sent", sa.String(64), nullable=False),
        sa.Column("accession_number_sent", sa.String(64), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("study_description", sa.String(64), nullable=False),
        sa.Column("series_description", sa.String(64), nullable=False),
        sa.Column("study_date", sa.String(8), nullable=False),
        sa.Column("sop_classes", sa.Text, nullable=False),
        sa.Column("instances", sa.Integer, nullable=False),
        sa.Column("sent", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("excluded", sa.Integer, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("duplicates", sa.Integer, nullable=False),
        sa.Column("retrying", sa.Integer, nullable=False),
        sa.Column("deidentified", sa.Boolean, nullable=False),
        sa.Column("tag_morphed", sa.Boolean, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("forward_node", "destination", "series_uid", name="transfer_series_key"),
    )
    op.create_index("transfer_series_last_seen", "transfer_series", ["last_seen"])
    op.create_index("transfer_series_study", "transfer_series", ["study_uid"])
    op.create_index("transfer_series_study_sent", "transfer_series", ["study_uid_sent"])
    op.create_index("transfer_series_series_sent", "transfer_series", ["series_uid_sent"])
    op.create_table(
        "transfer_instances",
        sa.Column("series_id", sa.Integer, sa.ForeignKey("transfer_series.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("sop_instance_uid", sa.String(64), primary_key=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_table(
        "transfer_reasons",
        sa.Column("series_id", sa.Integer, sa.ForeignKey("transfer_series.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("outcome", sa.String(16), primary_key=True),
        sa.Column("reason", sa.String(512), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "monitor_events",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("monitor_events_seen_at", "monitor_events", ["seen_at"])


def downgrade() -> None:
    op.drop_table("monitor_events")
    op.drop_table("transfer_reasons")
    op.drop_table("transfer_instances")
    op.drop_table("transfer_series")

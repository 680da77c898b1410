"""The Alembic migrations on SQLite and PostgreSQL: 0002 adds config_revisions and goes back cleanly."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from karnak_shared.database import MIGRATIONS, create_database_engine, upgrade_schema


def migrate(url: str, action: str, target: str) -> None:
    engine = create_database_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            getattr(command, action)(config, target)
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = create_database_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_config_revisions_migration_upgrades_downgrades_and_upgrades_again(db_url: str) -> None:
    engine = create_database_engine(db_url)
    upgrade_schema(engine)
    engine.dispose()
    assert {"pseudonyms", "kheops_shares", "config_revisions"} <= tables(db_url)
    migrate(db_url, "downgrade", "0001")
    assert "config_revisions" not in tables(db_url)
    assert {"pseudonyms", "kheops_shares"} <= tables(db_url)
    migrate(db_url, "upgrade", "head")
    assert "config_revisions" in tables(db_url)

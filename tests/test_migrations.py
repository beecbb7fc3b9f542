"""Alembic migrations: an empty database and one at the first revision both upgrade to the models' schema."""
from __future__ import annotations

import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app import MIGRATIONS_DIR, create_app
from app.extensions import db

EXPECTED_TABLES = {"sessions", "events", "orphan_instances", "alembic_version"}


def _app(tmp_path, auto_migrate: bool):
    return create_app({"MAIDER_HOME": str(tmp_path / "h"), "MAIDER_AUTO_MIGRATE": auto_migrate,
                       "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'm.db'}"})


def _head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def test_empty_database_upgrades_on_start(tmp_path):
    app = _app(tmp_path, auto_migrate=True)
    with app.app_context():
        inspector = sa.inspect(db.engine)
        assert EXPECTED_TABLES <= set(inspector.get_table_names())
        assert db.session.execute(sa.text("select version_num from alembic_version")).scalar() == _head_revision()
        assert db.session.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"


def test_database_from_first_migration_upgrades_to_head(tmp_path):
    app = _app(tmp_path, auto_migrate=False)
    with app.app_context():
        upgrade(directory=str(MIGRATIONS_DIR), revision="0001")
        db.session.execute(sa.text(
            "insert into sessions (uid, name, provider, label, region, plan, gpus, model_id, served_name, vllm_config,"
            " hourly_price, status, status_changed_at, ssh_port, tunnel_state, keep_on_failure, heal_attempts,"
            " destroy_attempts, budget_usd, max_lifetime_hours, created_by, created_at, poll_count, engine_state)"
            " values ('u1', 'old', 'linode', 'maider-u1', 'us-ord', 'g2-gpu-rtx4000a1-s', 1, 'm', 'coder', '{}',"
            " 0.52, 'ready', '2026-11-01 00:00:00', 22, 'up', 0, 0, 0, 0, 0, 'local', '2026-11-01 00:00:00', 0, '{}')"))
        db.session.commit()
        upgrade(directory=str(MIGRATIONS_DIR))
        assert db.session.execute(sa.text("select name from sessions")).scalar() == "old"
        assert db.session.execute(sa.text("select version_num from alembic_version")).scalar() == _head_revision()


def test_models_match_migrations(tmp_path):
    """A model change without a migration would leave users' databases behind: autogenerate must find nothing."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    app = _app(tmp_path, auto_migrate=True)
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"render_as_batch": True})
        assert compare_metadata(context, db.metadata) == []


def test_downgrade_to_base_and_back(tmp_path):
    app = _app(tmp_path, auto_migrate=True)
    with app.app_context():
        downgrade(directory=str(MIGRATIONS_DIR), revision="base")
        assert "sessions" not in sa.inspect(db.engine).get_table_names()
        upgrade(directory=str(MIGRATIONS_DIR))
        assert "sessions" in sa.inspect(db.engine).get_table_names()

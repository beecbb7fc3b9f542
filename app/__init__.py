"""maider's application factory."""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.config import default_home
from app.extensions import csrf, db, htmx, migrate

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"

log = logging.getLogger(__name__)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app; ``config`` overrides defaults (tests pass MAIDER_HOME and a database URI)."""
    app = Flask(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    config = dict(config or {})
    home = Path(config.get("MAIDER_HOME") or default_home()).expanduser()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    app.config.update(
        MAIDER_HOME=str(home),
        MAIDER_WORKDIR=os.getcwd(),
        MAIDER_DEMO=False,
        MAIDER_AUTO_MIGRATE=True,
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{home / 'maider.db'}",
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"timeout": 15}},
        WTF_CSRF_TIME_LIMIT=None,  # a panel tab left open overnight must still work in the morning
        SEND_FILE_MAX_AGE_DEFAULT=3600,
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
    )
    app.config.update(config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _load_or_create_secret_key(home)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True)
    csrf.init_app(app)
    htmx.init_app(app)

    from app.web import init_app as init_web

    init_web(app)

    if app.config["MAIDER_AUTO_MIGRATE"]:
        upgrade_database(app)
    return app


def upgrade_database(app: Flask) -> None:
    """Apply every pending Alembic migration (an empty database gets the whole schema)."""
    from flask_migrate import upgrade

    with app.app_context():
        upgrade(directory=str(MIGRATIONS_DIR))


def _load_or_create_secret_key(home: Path) -> str:
    """The CSRF/session signing key lives in MAIDER_HOME (0600) so open tabs survive a restart."""
    path = home / "secret_key"
    if path.is_file():
        return path.read_text().strip()
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the panel read while a worker writes; busy_timeout waits instead of failing 'database is locked'."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

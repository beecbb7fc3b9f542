"""one live session per name: a partial unique index on sessions.name where destroyed_at IS NULL

Databases written before this index may hold two live sessions with one name (concurrent launches raced). The
upgrade keeps the name on the newest of them, renames the others to the next free ``<name>-<n>`` and notes the
rename in each one's events, so the index can be created and every VM stays reachable by a name of its own.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 06:40:00

"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

INDEX = "uq_sessions_live_name"
LIVE = "destroyed_at IS NULL"
MAX_NAME = 40


def _free_name(name: str, taken: set[str]) -> str:
    number = 2
    while True:
        suffix = f"-{number}"
        candidate = (name[:MAX_NAME - len(suffix)] or "session") + suffix
        if candidate not in taken:
            return candidate
        number += 1


def _rename_duplicates(connection) -> None:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    taken = set(connection.execute(sa.text("SELECT name FROM sessions")).scalars())
    duplicated = connection.execute(sa.text(
        f"SELECT name FROM sessions WHERE {LIVE} GROUP BY name HAVING COUNT(*) > 1")).scalars().all()
    for name in duplicated:
        older = connection.execute(sa.text(
            f"SELECT id FROM sessions WHERE {LIVE} AND name = :name ORDER BY id DESC"), {"name": name}).scalars().all()
        for session_id in older[1:]:  # the newest keeps the name: it is the one the name addressed
            new_name = _free_name(name, taken)
            taken.add(new_name)
            connection.execute(sa.text("UPDATE sessions SET name = :new WHERE id = :id"),
                               {"new": new_name, "id": session_id})
            connection.execute(sa.text(
                "INSERT INTO events (session_id, at, kind, message, actor, detail) "
                "VALUES (:id, :at, 'note', :message, 'maider', '{}')"),
                {"id": session_id, "at": now,
                 "message": f"renamed from '{name}' to '{new_name}': another live session had the same name"})


def upgrade():
    connection = op.get_bind()
    # A destroyed session is never live; rows from older versions that lack the time get their last state change.
    connection.execute(sa.text(
        "UPDATE sessions SET destroyed_at = status_changed_at WHERE status = 'destroyed' AND destroyed_at IS NULL"))
    _rename_duplicates(connection)
    op.create_index(INDEX, "sessions", ["name"], unique=True, sqlite_where=sa.text(LIVE))


def downgrade():
    op.drop_index(INDEX, table_name="sessions")

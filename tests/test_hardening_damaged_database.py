"""A damaged maider.db: the server refuses to start and says what is damaged and where a copy was kept; a database
error while serving says what is known, never that sessions and VMs are unaffected."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from app.extensions import db
from engine_helpers import free_port

MAIDER = [sys.executable, "-c", "from app.cli import main; main()"]
PAGE = 4096


def damage(database: Path) -> None:
    """Overwrite the start of every page after the first (the schema survives, the tables do not)."""
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    data = bytearray(database.read_bytes())
    for offset in range(PAGE, len(data), PAGE):
        data[offset:offset + 100] = b"\xff" * 100
    database.write_bytes(bytes(data))


@pytest.mark.slow
def test_serve_refuses_a_damaged_database_and_keeps_a_copy(tmp_path):
    home = tmp_path / "maider-home"
    data_home = home / "demo"
    made = create_app({"MAIDER_HOME": str(data_home)})
    with made.app_context():
        db.engine.dispose()
    database = data_home / "maider.db"
    damage(database)
    damaged_bytes = database.read_bytes()

    env = {k: v for k, v in os.environ.items() if k not in ("LINODE_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(MAIDER_HOME=str(home), HOME=str(tmp_path / "home"))
    result = subprocess.run(MAIDER + ["serve", "--demo", "--port", str(free_port())], cwd=tmp_path / "project",
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert f"maider's database {database} is damaged: database disk image is malformed" in message
    copies = sorted(data_home.glob("maider.db.damaged-*"))
    assert len(copies) == 1 and f"A copy of the damaged file was kept at {copies[0]}" in message
    assert copies[0].read_bytes() == damaged_bytes
    assert "orphan" in message and "keep billing" in message
    assert database.read_bytes() == damaged_bytes  # the damaged file itself is left as it was
    assert not (home / "server.json").exists()
    assert list(data_home.glob("maider.db.checking*")) == []


def test_a_sound_database_passes_and_leaves_no_copy(app, tmp_path):
    from app.database_check import check_database

    database = Path(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"))
    check_database(database)
    assert [p.name for p in database.parent.iterdir() if ".damaged-" in p.name or ".checking" in p.name] == []


def test_a_database_error_says_what_is_known(app, client):
    app.config["MAIDER_API_TOKEN"] = "api-token"
    database = Path(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"))
    with app.app_context():
        db.engine.dispose()
    damage(database)
    answer = client.get("/api/v1/sessions", headers={"Authorization": "Bearer api-token"})
    assert answer.status_code == 500
    error = answer.get_json()["error"]
    assert "unaffected" not in error
    assert f"could not read or write its database ({database})" in error
    assert "VMs keep running and billing at the provider" in error


@pytest.mark.slow
def test_a_cli_command_relays_why_the_server_would_not_start(tmp_path):
    """With no server running, 'maider list' starts one; on a damaged database it stops at once and the command
    says why, instead of waiting for a server that will never answer."""
    home = tmp_path / "maider-home"
    made = create_app({"MAIDER_HOME": str(home / "demo")})
    with made.app_context():
        db.engine.dispose()
    damage(home / "demo" / "maider.db")
    env = {k: v for k, v in os.environ.items() if k not in ("LINODE_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(MAIDER_HOME=str(home), HOME=str(tmp_path / "home"))
    result = subprocess.run(MAIDER + ["list"], cwd=tmp_path / "project", env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "the maider server stopped at start: maider's database" in result.stderr
    assert "is damaged: database disk image is malformed" in result.stderr

"""Shared fixtures, flaskr-style: a real app on a real SQLite file in a temporary MAIDER_HOME."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from app import create_app
from app.extensions import db

CHROMIUM = os.environ.get("MAIDER_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's real config, tokens or data dir."""
    for variable in ("LINODE_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN", "MAIDER_LINODE_API_URL", "MAIDER_PORT",
                     "REGION", "TYPE", "MODEL_ID", "MAIDER_PROVIDER"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / ".local" / "share"))
    monkeypatch.setenv("MAIDER_HOME", str(tmp_path / "maider-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    workdir = tmp_path / "project"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


@pytest.fixture
def app(tmp_path: Path):
    """The app on a file database in a fresh MAIDER_HOME, schema from the Alembic migrations."""
    app = create_app({
        "TESTING": True,
        "MAIDER_HOME": str(tmp_path / "maider-home"),
        "MAIDER_WORKDIR": str(tmp_path / "project"),
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'maider-home' / 't.db'}",
    })
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Playwright drives Debian's Chromium (Playwright's own browser download cannot work offline)."""
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--no-sandbox", "--disable-gpu", "--headless=new", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
    }

"""The dashboard page is rendered once and served again only while nothing it shows has changed: each test changes
one thing a user could change and expects to see it at the next load."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from app.extensions import db
from app.models import Session, utcnow
from app.web.sessions import page_cache
from test_auth import invite_and_sign_in
from test_web_sessions import make_session


@pytest.fixture
def ctx(app: Flask) -> Flask:
    """Demo mode, no app context pushed across requests (each browser keeps its own CSRF secret)."""
    app.config["MAIDER_DEMO"] = True
    page_cache.clear()
    return app


def page(browser) -> str:
    response = browser.get("/")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_a_new_session_shows_at_the_next_load(client, ctx) -> None:
    page(client)
    first = page(client)
    assert page(client) == first  # nothing changed: the same page
    with ctx.app_context():
        make_session("ready", name="fresh-one")
    assert "fresh-one" in page(client)


def test_a_changed_env_file_changes_the_launch_card_at_once(client, ctx) -> None:
    project = Path(ctx.config["MAIDER_WORKDIR"])
    (project / ".env").write_text("MODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\nREGION=us-ord\n")
    page(client)
    assert "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ" in page(client)
    (project / ".env").write_text("MODEL_ID=Qwen/Qwen2.5-Coder-14B-Instruct-AWQ\nREGION=us-ord\n")
    assert "Qwen/Qwen2.5-Coder-14B-Instruct-AWQ" in page(client)


def test_a_flash_shows_once_and_is_never_replayed(client, ctx) -> None:
    page(client)
    page(client)
    with client.session_transaction() as cookie:
        cookie["_flashes"] = [("success", "Saved .env for this test")]
    assert "Saved .env for this test" in page(client)
    assert "Saved .env for this test" not in page(client)


def test_people_never_get_each_others_page(client, ctx) -> None:
    viewer = invite_and_sign_in(ctx, ctx, "vic", "viewer")
    page(client)
    owner_page = page(client)
    page(viewer)
    viewer_page = page(viewer)
    assert 'id="launch"' in owner_page and 'id="launch"' not in viewer_page  # a viewer cannot launch
    assert viewer_page != owner_page


def test_the_forms_on_a_reused_page_still_work(client, ctx) -> None:
    import re

    page(client)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page(client)).group(1)
    response = client.post("/sessions", data={"csrf_token": token, "name": "Bad Name!"},
                           headers={"HX-Request": "true"})
    assert response.status_code in (200, 422) and "lower-case letters" in response.get_data(as_text=True)


def test_an_ended_session_leaves_the_page(client, ctx) -> None:
    with ctx.app_context():
        session_id = make_session("ready", name="ending").id
    assert "ending" in page(client)
    with ctx.app_context():
        row = db.session.get(Session, session_id)
        row.status, row.destroyed_at, row.status_reason = "destroyed", utcnow(), "user_requested"
        db.session.commit()
    assert "Destroyed" in page(client) or "destroyed" in page(client)

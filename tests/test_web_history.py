"""The history page: finished sessions with runtime, cost, model and plan, and the total spend."""
from __future__ import annotations

from datetime import timedelta

import pytest

from app.extensions import db
from app.models import utcnow
from test_web_sessions import make_session


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


def test_history_lists_finished_sessions_with_cost_and_total(client, ctx):
    now = utcnow()
    first = make_session("destroyed", name="morning", hourly_price=0.52,
                         provider_created_at=now - timedelta(hours=3), destroyed_at=now - timedelta(hours=2))
    second = make_session("failed", name="broken", hourly_price=1.04, status_message="cloud-init failed",
                          provider_created_at=now - timedelta(minutes=40), destroyed_at=now - timedelta(minutes=10))
    live = make_session("ready", name="still-running")
    page = client.get("/history/").get_data(as_text=True)
    assert first.name in page and second.name in page
    assert live.name not in page
    assert "1h 00m" in page and "$0.52" in page  # first: one hour at $0.52/h
    assert "30m 00s" in page  # second: half an hour at $1.04/h = $0.52
    assert '<strong>$0.52</strong>' in page
    assert 'data-testid="history-total">$1.04<' in page
    assert "1 × RTX 4000 Ada" in page and "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ" in page
    assert "Failed" in page and "Destroyed" in page
    assert 'aria-current="page"' in page and ">History<" in page


def test_history_links_to_the_exact_past_session_when_a_name_is_reused(client, ctx):
    old = make_session("destroyed", name="daily", model_id="org/old-model")
    make_session("ready", name="daily", model_id="org/new-model")
    page = client.get("/history/").get_data(as_text=True)
    assert f"/sessions/daily?uid={old.uid}" in page
    detail = client.get(f"/sessions/daily?uid={old.uid}").get_data(as_text=True)
    assert "org/old-model" in detail and "Session over." in detail
    assert "org/new-model" in client.get("/sessions/daily").get_data(as_text=True)


def test_history_when_nothing_finished_yet(client, ctx):
    page = client.get("/history/").get_data(as_text=True)
    assert "No finished sessions yet" in page
    assert db.session.is_active

"""Spend charts: the dashboard's spend per day and the history's per day, model and plan, from billed intervals."""
from __future__ import annotations

import html
import json
import re
from datetime import datetime, timedelta

import pytest

from app.services import spending
from app.models import utcnow
from test_web_sessions import make_session, text


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


def _chart(page: str, index: int = 0) -> dict:
    found = re.findall(r"data-chart='([^']+)'", page)
    return json.loads(html.unescape(found[index]))


def test_a_day_gets_the_part_of_each_vm_billed_inside_it(ctx):
    now = datetime(2026, 12, 1, 6, 0)
    make_session("destroyed", hourly_price=1.0, provider_created_at=datetime(2026, 11, 30, 22, 0),
                 destroyed_at=datetime(2026, 12, 1, 2, 0), model_id="a/one", plan="p1")
    make_session("ready", hourly_price=2.0, provider_created_at=datetime(2026, 12, 1, 5, 0), model_id="b/two",
                 plan="p2")
    billed = spending.billed_intervals(now)
    days = spending.per_day(billed, now, 3)
    assert days.labels == ["Nov 29", "Nov 30", "Dec 01"]
    assert days.values == pytest.approx([0.0, 2.0, 2.0 + 2.0])  # 2 h on the 30th; 2 h + 1 h at $2 on the 1st
    models = spending.per_key(billed, "model_id")
    assert models.labels == ["one", "two"] and models.values == pytest.approx([4.0, 2.0])


def test_the_dashboard_charts_spend_per_day_once_something_was_spent(client, ctx):
    assert 'id="spend-chart"' not in text(client.get("/"))
    make_session("ready", hourly_price=0.52, provider_created_at=utcnow() - timedelta(hours=2))
    page = text(client.get("/"))
    chart = _chart(page)
    assert len(chart["labels"]) == 7 and chart["datasets"][0]["data"][-1] > 0
    assert "js/spend_charts.js" in page and "<script>" not in page


def test_history_charts_spend_per_day_model_and_plan(client, ctx):
    make_session("destroyed", hourly_price=1.05, plan="g2-gpu-rtx4000a2-s",
                 provider_created_at=utcnow() - timedelta(hours=3), destroyed_at=utcnow() - timedelta(hours=1))
    page = text(client.get("/history/"))
    per_day, per_model, per_plan = (_chart(page, i) for i in range(3))
    assert len(per_day["labels"]) == 30
    assert per_model["labels"] == ["Qwen2.5-Coder-7B-Instruct-AWQ"]
    assert per_plan["labels"] == ["g2-gpu-rtx4000a2-s"] and per_plan["datasets"][0]["data"] == [2.1]

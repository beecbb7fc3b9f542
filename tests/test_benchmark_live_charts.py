"""Live charts on the session page: the monitor keeps a bounded ring of /metrics samples per session."""
from __future__ import annotations

import html
import json
import re
from datetime import datetime, timedelta

import pytest

from app.engine.monitor import SAMPLE_RING, _with_sample
from app.models import Session, SessionState
from engine_helpers import drive, in_state, launch


def _metrics(rate: float) -> dict:
    return {"tokens_per_s": rate, "running": 2, "waiting": 1, "kv_cache_usage": 0.25}


def test_the_ring_keeps_the_newest_samples_and_the_cost_so_far():
    started = datetime(2026, 1, 1, 12, 0, 0)
    session = Session(hourly_price=1.8, provider_created_at=started, instance_id="1")
    samples: list = []
    for i in range(SAMPLE_RING + 60):
        samples = _with_sample(samples, session, started + timedelta(seconds=5 * i), _metrics(float(i)))
    assert len(samples) == SAMPLE_RING  # bounded: the oldest went
    assert samples[-1][1] == SAMPLE_RING + 59 and samples[0][1] == 60
    last_at = started + timedelta(seconds=5 * (SAMPLE_RING + 59))
    assert samples[-1][5] == pytest.approx(1.8 * (last_at - started).total_seconds() / 3600, abs=1e-4)
    assert samples[-1][2:5] == [2, 1, 0.25]


def _page_samples(page: str) -> dict:
    return json.loads(html.unescape(re.search(r"id=\"session-samples\" hidden data-samples='([^']*)'", page).group(1)))


def test_the_session_page_charts_the_monitors_samples_through_its_one_live_channel(app, client, linode_world):
    name = launch(app, "live", linode_world["workdir"])
    drive(app, name, in_state(SessionState.READY))
    drive(app, name, lambda s: len((s.engine_state or {}).get("samples") or []) >= 2, with_monitor=True)
    page = client.get(f"/sessions/{name}").get_data(as_text=True)
    body = _page_samples(page)
    assert len(body["t"]) >= 2  # the charts draw from the page at once: no fetch of their own
    assert len(body["t"]) == len(body["tokens_per_s"]) == len(body["running"]) == len(body["cost"])
    assert "chart-4.6.1" in page and "Benchmark this session" in page and "data-live-src" not in page
    version = re.search(r'data-live-version="([^"]+)"', page).group(1)
    channel = f"/sessions/{name}/live"
    assert client.get(channel, query_string={"v": version}, headers={"HX-Request": "true"}).status_code == 204
    drive(app, name, lambda s: len((s.engine_state or {}).get("samples") or []) > len(body["t"]), with_monitor=True)
    answer = client.get(channel, query_string={"v": version}, headers={"HX-Request": "true"})
    assert answer.status_code == 200  # a new sample rides the page's channel, out of band
    assert "hx-swap-oob" in answer.get_data(as_text=True)
    newer = _page_samples(answer.get_data(as_text=True))
    assert len(newer["t"]) > len(body["t"]) and newer["t"][-1] > body["t"][-1]

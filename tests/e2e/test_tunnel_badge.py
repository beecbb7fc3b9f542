"""The session page's tunnel badge after the Reconnect button, in Chromium: a tunnel that comes back before the page's
live channel next asks must still turn the badge from "reconnecting" to "up" (it once stayed "reconnecting")."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from engine_helpers import serve_in_thread
from playwright.sync_api import Page, Route, expect

from app.extensions import db
from app.models import Session, utcnow

pytestmark = pytest.mark.browser


def _ready_session() -> Session:
    """A ready session with its tunnel up, as the monitor leaves it (no VM: the reconnect has no tunnel to drop)."""
    uid = uuid.uuid4().hex
    now = utcnow()
    session = Session(
        uid=uid, name="tunnelled", provider="simulated", label=f"maider-{uid[:12]}", region="us-ord",
        plan="g2-gpu-rtx4000a1-s", gpus=1, gpu_name="RTX 4000 Ada", model_id="Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
        served_name="coder", hourly_price=0.52, status="ready", created_at=now - timedelta(minutes=5),
        instance_id="7001", provider_created_at=now - timedelta(minutes=4), api_port=8000, webui_port=3000,
        tunnel_state="up", ready_at=now - timedelta(minutes=1), max_model_len=32768, workdir="/home/me/project")
    db.session.add(session)
    db.session.commit()
    return session


def test_a_tunnel_back_up_between_two_polls_still_shows_up(app, page: Page):
    with app.app_context(), serve_in_thread(app) as url:
        session = _ready_session()
        page.goto(f"{url}/login?token={app.extensions['maider_login_links'].mint()}")
        page.goto(f"{url}/sessions/{session.name}")
        badge = page.locator("#session-tunnel [data-testid=tunnel-state]")
        expect(badge).to_have_text("up")

        held: list[Route] = []  # the live channel's polls, held while the tunnel goes down and comes back
        holding = [True]
        page.route("**/sessions/tunnelled/live?*",
                   lambda route: held.append(route) if holding[0] else route.continue_())
        for _ in range(50):  # a poll sent before the click, answered after it: it must not undo what the click shows
            if held:
                break
            page.wait_for_timeout(100)
        assert held, "the page's live channel did not poll"
        page.click("#reconnect-button")
        expect(page.locator("#session-tunnel")).to_contain_text("Reconnecting the tunnels")
        expect(badge).to_have_text("reconnecting")

        db.session.refresh(session)
        assert session.tunnel_state == "reconnecting"
        session.tunnel_state = "up"  # the monitor's tick: the tunnel is back before the page asked again
        db.session.commit()
        holding[0] = False
        for route in held:
            route.continue_()

        expect(badge).to_have_text("up", timeout=10_000)

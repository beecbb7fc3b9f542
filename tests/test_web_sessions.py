"""The dashboard and session pages through the Flask test client: partials, polling, forms, actions, secrets."""
from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from app.engine.identity import ensure_identity
from app.engine.state import record_event
from app.extensions import db
from app.models import Event, OrphanInstance, Session, User, utcnow
from engine_helpers import csrf_token

HX = {"HX-Request": "true"}


def make_session(status: str = "ready", **overrides) -> Session:
    """A session row as the workers would have left it in ``status``."""
    uid = uuid.uuid4().hex
    now = utcnow()
    values = dict(
        uid=uid, name=f"s-{uid[:6]}", provider="simulated", label=f"maider-{uid[:12]}", region="us-ord",
        plan="g2-gpu-rtx4000a1-s", gpus=1, gpu_name="RTX 4000 Ada", model_id="Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
        served_name="coder", hourly_price=0.52, status=status, created_at=now - timedelta(minutes=5),
        workdir="/home/me/project",
    )
    if status not in ("requested",):
        values.update(instance_id="7001", provider_created_at=now - timedelta(minutes=4))
    if status in ("ready", "switching_model"):
        values.update(api_port=8000, webui_port=3000, tunnel_state="up", ready_at=now - timedelta(minutes=1),
                      max_model_len=32768)
    if status == "destroyed":
        values.update(destroyed_at=now - timedelta(minutes=1), status_reason="user_requested")
    values.update(overrides)
    session = Session(**values)
    db.session.add(session)
    db.session.commit()
    return session


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


def csrf_headers(client) -> dict[str, str]:
    return {**HX, "X-CSRFToken": csrf_token(client)}


def text(response) -> str:
    return response.get_data(as_text=True)


# ---- dashboard -----------------------------------------------------------------------------------------------

def test_first_run_says_how_to_start(client, ctx):
    page = text(client.get("/"))
    assert "No GPU sessions running" in page
    assert "maider serve --demo" in page  # not in demo mode: how to try it
    assert "setup wizard" in page
    assert 'id="launch"' in page


def test_first_run_in_demo_mode_offers_a_demo_launch(client, ctx):
    ctx.config["MAIDER_DEMO"] = True
    page = text(client.get("/"))
    assert "Launch a demo session" in page
    assert "Demo mode" in page


def test_dashboard_shows_a_card_per_live_session(client, ctx):
    live = make_session("booting", stage_detail="waiting for SSH")
    gone = make_session("destroyed")
    page = text(client.get("/"))
    assert f'id="session-{live.name}"' in page
    assert f'id="session-{gone.name}"' not in page
    assert "Recently ended" in page and gone.name in page


def test_card_partial_shows_step_and_detail_and_polls_nothing_itself(client, ctx):
    session = make_session("booting", stage_detail="waiting for SSH")
    response = client.get(f"/sessions/{session.name}/card", headers=HX)
    body = text(response)
    assert response.status_code == 200
    assert "<html" not in body
    assert f'id="session-{session.name}"' in body
    assert "hx-trigger" not in body  # the tab's one live channel refreshes it
    assert "Step 3/6" in body and "Booting" in body and "waiting for SSH" in body


def test_card_of_a_destroyed_session_stops_polling(client, ctx):
    session = make_session("destroyed")
    body = text(client.get(f"/sessions/{session.name}/card", headers=HX))
    assert "hx-trigger" not in body and "hx-get" not in body
    assert "Destroyed" in body


def test_failed_session_with_vm_kept_keeps_ticking_its_cost(client, ctx):
    session = make_session("failed", status_message="vLLM ran out of memory", keep_on_failure=True)
    body = text(client.get(f"/sessions/{session.name}/card", headers=HX))
    assert 'data-tick-rate="0.52"' in body  # the browser moves the cost on at the VM's rate
    assert "vLLM ran out of memory." in body  # its own capitals kept
    gone = make_session("destroyed")
    assert "data-tick-rate" not in text(client.get(f"/sessions/{gone.name}/card", headers=HX))


def test_card_shows_money_and_duration_formatted(client, ctx):
    now = utcnow()
    session = make_session("ready", hourly_price=0.52, provider_created_at=now - timedelta(hours=1, minutes=4))
    body = text(client.get(f"/sessions/{session.name}/card", headers=HX))
    assert "1h 04m" in body
    assert "$0.55" in body  # 0.52 $/h × 64 min
    assert "$0.52/h" in body
    fresh = make_session("booting", hourly_price=0.52, provider_created_at=now - timedelta(seconds=5))
    body = text(client.get(f"/sessions/{fresh.name}/card", headers=HX))
    assert re.search(r"\$0\.000\d", body), "a fresh session must not read as free"


def test_card_moved_state_asks_the_totals_to_refresh(client, ctx):
    session = make_session("ready")
    same = client.get(f"/sessions/{session.name}/card?shown=ready.0", headers=HX)
    moved = client.get(f"/sessions/{session.name}/card?shown=starting.0", headers=HX)
    assert "HX-Trigger" not in same.headers
    assert moved.headers["HX-Trigger"] == "totals-changed"


def test_totals_partial(client, ctx):
    make_session("ready", hourly_price=1.5)
    make_session("booting", hourly_price=0.5)
    body = text(client.get("/sessions/totals", headers=HX))
    assert "<html" not in body and 'id="totals"' in body
    assert "$2.00" in body  # burn rate of both VMs
    assert body.count('data-tick-rate="2.0"') == 2  # spent today and in total move on at that rate in the browser


def test_the_live_channel_answers_204_until_something_shown_changes(client, ctx):
    session = make_session("booting")
    page = text(client.get("/"))
    assert page.count("hx-trigger") == 1  # one live channel for the whole tab
    version = re.search(r'data-live-version="([0-9a-f]+)"', page).group(1)
    assert client.get(f"/live?v={version}", headers=HX).status_code == 204
    session.status = "configuring"
    db.session.commit()
    moved = client.get(f"/live?v={version}", headers=HX)
    assert moved.status_code == 200 and moved.headers["X-Live-Version"] != version
    body = text(moved)
    for part in ('id="sessions" hx-swap-oob="true"', 'id="totals" aria-label="Spend" hx-swap-oob="true"',
                 'id="orphans" hx-swap-oob="true"'):
        assert part in body
    assert "Installing drivers" in body
    newer = moved.headers["X-Live-Version"]
    assert client.get(f"/live?v={newer}", headers=HX).status_code == 204
    make_session("requested")
    assert client.get(f"/live?v={newer}", headers=HX).status_code == 200


# ---- launch form -----------------------------------------------------------------------------------------------

def test_launch_form_errors_render_next_to_fields_with_200(client, ctx):
    response = client.post("/sessions", data={"name": "Bad Name!", "model_id": "no-slash", "max_model_len": "12"},
                           headers=csrf_headers(client))
    body = text(response)
    assert response.status_code == 200
    assert "<html" not in body
    assert re.search(r'id="launch-name-error">[^<]*lower-case letters', body)
    assert re.search(r'id="launch-model_id-error">[^<]*Hugging Face id', body)
    assert re.search(r'id="launch-max_model_len-error">[^<]*between 256', body)
    assert 'aria-invalid="true"' in body
    assert db.session.query(Session).count() == 0


def test_launch_refused_by_the_service_is_shown_inline(client, ctx):
    ctx.config["MAIDER_DEMO"] = True
    make_session("ready", name="taken")
    response = client.post("/sessions", data={"name": "taken"}, headers=csrf_headers(client))
    assert response.status_code == 200
    assert "Could not launch" in text(response) and "already exists" in text(response)


def test_launch_without_configuration_lists_what_to_fix(client, ctx):
    response = client.post("/sessions", data={}, headers=csrf_headers(client))
    body = text(response)
    assert response.status_code == 200
    assert "Could not launch." in body
    assert re.search(r"<li>MODEL_ID: not set[^<]*</li>", body)
    assert re.search(r"<li>LINODE_TOKEN: not set[^<]*</li>", body)
    assert "Nothing was created and nothing is billed." in body
    assert db.session.query(Session).count() == 0


def test_launch_in_demo_mode_queues_a_session_and_refreshes_the_list(client, ctx):
    ctx.config["MAIDER_DEMO"] = True
    response = client.post("/sessions", data={"name": "first"}, headers=csrf_headers(client))
    assert response.status_code == 200
    assert response.headers["HX-Trigger"] == "sessions-changed"
    assert "Launching" in text(response) and "first" in text(response)
    session = db.session.query(Session).filter_by(name="first").one()
    assert session.status == "requested" and session.created_by == db.session.query(User).filter_by(is_owner=True).one().name


def test_launch_without_htmx_redirects_after_post(client, ctx):
    ctx.config["MAIDER_DEMO"] = True
    headers = {k: v for k, v in csrf_headers(client).items() if k != "HX-Request"}
    response = client.post("/sessions", data={"name": "plain"}, headers=headers)
    assert response.status_code == 303 and response.headers["Location"].endswith("/")


# ---- session page -----------------------------------------------------------------------------------------------

SECTIONS = ("aider", "tunnel", "webui", "switch", "timeline", "metrics", "log", "events")


def test_session_page_shows_every_section(client, ctx):
    session = make_session("ready", engine_state={
        "log_tail": "INFO Application startup complete.",
        "gpus": [{"index": 0, "name": "RTX 4000 Ada", "memory_total_mb": 20475, "memory_used_mb": 18400,
                  "utilization": 37, "temperature": 55}],
        "metrics": {"tokens_per_s": 41.5, "running": 1, "waiting": 0, "kv_cache_usage": 0.25}})
    page = text(client.get(f"/sessions/{session.name}"))
    for section in SECTIONS:
        assert f'id="session-{section}"' in page
    assert 'id="session-header"' in page
    assert "Application startup complete." in page
    assert "41.5" in page and "25%" in page and "37% busy" in page
    assert f'src="/sessions/{session.name}/webui"' in page  # Open WebUI embedded, through the panel's link
    assert "http://127.0.0.1:8000/v1" in page
    assert "aider --model" in page and "/home/me/project/.aider-env" in page


@pytest.mark.parametrize("section", SECTIONS)
def test_sections_are_partials_that_poll_nothing_themselves(client, ctx, section):
    live = make_session("starting")
    body = text(client.get(f"/sessions/{live.name}/sections/{section}", headers=HX))
    assert "<html" not in body
    assert f'id="session-{section}"' in body
    assert "hx-trigger" not in body  # the page's one live channel brings them


def _live_version(client, session) -> str:
    page = text(client.get(f"/sessions/{session.name}?uid={session.uid}"))
    assert page.count('hx-trigger="every') == 1  # one live channel for the whole page
    return re.search(r'data-live-version="([^"]+)"', page).group(1)


def test_the_page_channel_sends_only_the_parts_that_changed(client, ctx):
    session = make_session("ready", engine_state={"log_tail": "line one"})
    version = _live_version(client, session)
    url = f"/sessions/{session.name}/live"
    assert client.get(url, query_string={"v": version, "uid": session.uid}, headers=HX).status_code == 204
    session.engine_state = {"log_tail": "line one\nline two"}
    db.session.commit()
    changed = client.get(url, query_string={"v": version, "uid": session.uid}, headers=HX)
    body = text(changed)
    assert changed.status_code == 200 and "line two" in body
    assert 'id="session-log" aria-labelledby="log-title" hx-swap-oob="true"' in body
    assert 'id="session-header"' not in body and 'id="session-events"' not in body
    newer = changed.headers["X-Live-Version"]
    assert client.get(url, query_string={"v": newer, "uid": session.uid}, headers=HX).status_code == 204


def test_the_page_channel_stops_once_the_session_has_ended(client, ctx):
    session = make_session("ready")
    version = _live_version(client, session)
    session.status, session.destroyed_at = "destroyed", utcnow()
    db.session.commit()
    url = f"/sessions/{session.name}/live"
    last = client.get(url, query_string={"v": version, "uid": session.uid}, headers=HX)
    assert last.status_code == 200 and "Session over." in text(last)
    final = {"v": last.headers["X-Live-Version"], "uid": session.uid}
    assert client.get(url, query_string=final, headers=HX).status_code == 286  # htmx: stop polling


def test_header_shows_cost_ticking_and_tells_the_page_when_the_state_moved(client, ctx):
    session = make_session("switching_model", stage_detail="loading the new model")
    response = client.get(f"/sessions/{session.name}/header?shown=ready.0", headers=HX)
    body = text(response)
    assert "<html" not in body and 'data-tick-rate="0.52"' in body
    assert "Switching model" in body and "loading the new model" in body
    assert response.headers["HX-Trigger"] == "session-changed"
    assert re.search(rf"<title>{session.name} · Switching model · \$[0-9.]+ · maider</title>", body)


def test_open_webui_is_embedded_only_when_ready_and_the_tunnel_is_up(client, ctx):
    ready = make_session("ready")
    assert 'id="webui-frame"' in text(client.get(f"/sessions/{ready.name}/sections/webui", headers=HX))
    down = make_session("ready", tunnel_state="reconnecting")
    body = text(client.get(f"/sessions/{down.name}/sections/webui", headers=HX))
    assert 'id="webui-frame"' not in body and "reconnecting" in body
    launching = make_session("booting")
    assert "<iframe" not in text(client.get(f"/sessions/{launching.name}/sections/webui", headers=HX))


def test_destroyed_session_page_shows_the_cost_summary(client, ctx):
    now = utcnow()
    session = make_session("destroyed", provider_created_at=now - timedelta(minutes=31),
                           destroyed_at=now - timedelta(minutes=1))
    page = text(client.get(f"/sessions/{session.name}"))
    assert "Session over." in page and "30m 00s" in page and "$0.26" in page
    assert "hx-trigger" not in page


def test_failed_session_says_what_went_wrong_and_what_to_do(client, ctx):
    session = make_session("failed", status_message="the model is gated on Hugging Face: set HF_TOKEN",
                           keep_on_failure=True)
    page = text(client.get(f"/sessions/{session.name}"))
    assert "What went wrong:" in page and "gated" in page
    assert "still billed" in page


def test_timeline_shows_stage_durations_from_events(client, ctx):
    t0 = utcnow() - timedelta(minutes=10)
    session = make_session("ready", created_at=t0)
    steps = [("requested", "creating", 1), ("creating", "booting", 20), ("booting", "configuring", 95),
             ("configuring", "rebooting", 300), ("rebooting", "starting", 360)]
    for old, new, at in steps:
        record_event(session, "state", f"{old} → {new}", at=t0 + timedelta(seconds=at), **{"from": old, "to": new})
    record_event(session, "stage", "Pulling container images", at=t0 + timedelta(seconds=361), phase="pulling")
    record_event(session, "stage", "Downloading model weights", at=t0 + timedelta(seconds=421), phase="downloading")
    record_event(session, "stage", "Loading weights", at=t0 + timedelta(seconds=500), phase="loading",
                 model_load_seconds=31.2)
    record_event(session, "state", "starting → ready", at=t0 + timedelta(seconds=560),
                 **{"from": "starting", "to": "ready"})
    db.session.commit()
    body = text(client.get(f"/sessions/{session.name}/sections/timeline", headers=HX))
    assert "Ready in <strong class=\"num\">9m 20s</strong>" in body
    rows = dict(re.findall(r"</span>([^<]+)</td>\s*<td class=\"nowrap\">.*?</td>\s*<td class=\"num\">([^<]+)</td>",
                           body, re.S))
    assert rows["Boot"] == "1m 15s"
    assert rows["Configure (drivers, Docker)"] == "3m 25s"
    assert rows["Reboot"] == "1m 00s"
    assert rows["vLLM start"] == "3m 20s"
    assert "Image pull" in body and "1m 00s" in body  # 361 → 421
    assert "Weight download" in body and "1m 19s" in body  # 421 → 500
    assert "vLLM: 31.2s" in body


def test_events_are_listed_newest_first_with_actor(client, ctx):
    session = make_session("ready")
    record_event(session, "action", "destroy requested", actor="alice")
    record_event(session, "warning", "idle for 25 minutes")
    db.session.commit()
    body = text(client.get(f"/sessions/{session.name}/sections/events", headers=HX))
    assert body.index("idle for 25 minutes") < body.index("destroy requested")
    assert "alice" in body


def test_unknown_session_polls_stop_and_pages_404(client, ctx):
    assert client.get("/sessions/nobody/card", headers=HX).status_code == 286
    response = client.get("/sessions/nobody")
    assert response.status_code == 404 and b"Back to sessions" in response.data


# ---- actions -----------------------------------------------------------------------------------------------------

def test_destroy_sets_destroy_requested_at_and_returns_the_card(client, ctx):
    session = make_session("ready")
    response = client.delete(f"/sessions/{session.name}?view=card", headers=csrf_headers(client))
    assert response.status_code == 200
    db.session.refresh(session)
    assert session.destroy_requested_at is not None
    body = text(response)
    assert f'id="session-{session.name}"' in body and "Destroy requested" in body
    assert "hx-delete" not in body  # no second destroy button
    event = db.session.query(Event).filter_by(session_id=session.id, kind="action").one()
    assert event.actor == db.session.query(User).filter_by(is_owner=True).one().name  # who clicked, not "panel"


def test_destroy_buttons_ask_for_confirmation(client, ctx):
    session = make_session("ready")
    card = text(client.get(f"/sessions/{session.name}/card", headers=HX))
    page = text(client.get(f"/sessions/{session.name}"))
    for body in (card, page):
        assert re.search(r'hx-delete="[^"]+"[^>]*hx-confirm="Destroy ', body, re.S)


def test_destroy_from_the_page_returns_the_header(client, ctx):
    session = make_session("ready")
    response = client.delete(f"/sessions/{session.name}?view=header", headers=csrf_headers(client))
    assert 'id="session-header"' in text(response)
    assert response.headers["HX-Trigger"] == "session-changed"


def test_destroying_twice_is_refused_with_a_toast_not_an_error_page(client, ctx):
    session = make_session("destroyed")
    response = client.delete(f"/sessions/{session.name}?view=card", headers=csrf_headers(client))
    assert response.status_code == 200
    assert response.headers["HX-Reswap"] == "none"
    toast = json.loads(response.headers["HX-Trigger"])["maider:toast"]
    assert "already destroyed" in toast["message"]


def test_destroy_without_csrf_token_is_refused(client, ctx):
    session = make_session("ready")
    client.delete(f"/sessions/{session.name}", headers=HX)
    db.session.refresh(session)
    assert session.destroy_requested_at is None


def test_switch_model_form_errors_render_next_to_the_field(client, ctx):
    session = make_session("ready")
    for data, message in (({"model_id": ""}, "Enter the Hugging Face id"),
                          ({"model_id": "not a model"}, "Hugging Face id like"),
                          ({"model_id": "Qwen/X", "max_model_len": "99"}, "between 256")):
        response = client.post(f"/sessions/{session.name}/model", data=data, headers=csrf_headers(client))
        assert response.status_code == 200
        assert 'id="session-switch"' in text(response) and message in text(response)
        assert "<html" not in text(response)
    db.session.refresh(session)
    assert session.status == "ready"


def test_switch_model_refused_while_launching_says_why(client, ctx):
    session = make_session("booting")
    response = client.post(f"/sessions/{session.name}/model", data={"model_id": "Qwen/Qwen2.5-Coder-14B-Instruct-AWQ"},
                           headers=csrf_headers(client))
    assert response.status_code == 200
    assert "once it is ready" in text(response)


def test_switch_model_to_a_fitting_model_shows_progress(client, ctx):
    session = make_session("ready", vllm_config={"max_model_len": 16384, "tensor_parallel_size": 1})
    response = client.post(f"/sessions/{session.name}/model",
                           data={"model_id": "Qwen/Qwen2.5-Coder-14B-Instruct-AWQ", "max_model_len": "16384"},
                           headers=csrf_headers(client))
    assert response.status_code == 200, text(response)
    db.session.refresh(session)
    assert session.status == "switching_model", text(response)
    assert 'id="switch-progress"' in text(response)
    assert response.headers["HX-Trigger"] == "session-changed"


def test_extend_resets_the_watchdog(client, ctx):
    session = make_session("ready", idle_timeout_minutes=30, last_activity_at=utcnow() - timedelta(minutes=25),
                           watchdog_warned_at=utcnow())
    page = text(client.get(f"/sessions/{session.name}"))
    assert "the watchdog will destroy it soon" in page
    response = client.post(f"/sessions/{session.name}/extend", headers=csrf_headers(client))
    assert "Watchdog timer reset." in text(response)
    db.session.refresh(session)
    assert session.watchdog_warned_at is None


def test_reconnect_refused_when_not_ready_is_explained_in_the_section(client, ctx):
    session = make_session("booting")
    response = client.post(f"/sessions/{session.name}/tunnel", headers=csrf_headers(client))
    assert response.status_code == 200
    assert 'id="session-tunnel"' in text(response) and "tunnels exist once it is ready" in text(response)


def test_orphans_can_be_adopted_or_destroyed(client, ctx):
    kept = OrphanInstance(provider="linode", instance_id="555", label="maider-abc", region="us-ord",
                          plan="g2-gpu-rtx4000a1-s", hourly_price=0.52)
    doomed = OrphanInstance(provider="linode", instance_id="556", label="maider-def", region="us-ord",
                            plan="g2-gpu-rtx4000a1-s", hourly_price=0.52)
    db.session.add_all([kept, doomed])
    db.session.commit()
    page = text(client.get("/"))
    assert "maider-abc" in page and "Adopt" in page
    response = client.post(f"/orphans/{kept.id}/adopt", headers=csrf_headers(client))
    assert response.headers["HX-Trigger"] == "sessions-changed" and "maider-abc" not in text(response)
    response = client.delete(f"/orphans/{doomed.id}", headers=csrf_headers(client))
    assert "maider-def" not in text(response)
    adopted = db.session.query(Session).filter_by(instance_id="555").one()
    destroying = db.session.query(Session).filter_by(instance_id="556").one()
    assert adopted.status == "failed" and destroying.status == "destroying"


# ---- secrets -----------------------------------------------------------------------------------------------------

def test_no_api_key_in_any_page(client, ctx):
    home = Path(ctx.config["MAIDER_HOME"])
    ready = make_session("ready")
    booting = make_session("booting")
    keys = [ensure_identity(home, s.uid).api_key for s in (ready, booting)]
    # Where a key could slip in: text that came from the VM or from a library's error message.
    record_event(ready, "error", f"vLLM said: --api-key {keys[0]} rejected", evidence=f"api_key={keys[0]}")
    booting.status_message = f"boom: Authorization: Bearer {keys[1]}"
    db.session.commit()
    urls = ["/", "/history/", "/sessions/list", "/sessions/totals"]
    for session in (ready, booting):
        urls += [f"/sessions/{session.name}", f"/sessions/{session.name}/card", f"/sessions/{session.name}/header"]
        urls += [f"/sessions/{session.name}/sections/{section}" for section in SECTIONS]
    for url in urls:
        body = text(client.get(url, headers=HX if "/sections/" in url or url.endswith(("/card", "/header")) else {}))
        for key in keys:
            assert key not in body, url


def test_pages_have_no_inline_script_or_style(client, ctx):
    session = make_session("ready")
    for url in ("/", f"/sessions/{session.name}", "/history/"):
        body = text(client.get(url))
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", body), url
        assert " style=" not in body and "<style" not in body, url
        assert not re.search(r"\son[a-z]+=", body), url



def test_api_key_in_the_vllm_log_is_masked(client, ctx):
    home = Path(ctx.config["MAIDER_HOME"])
    session = make_session("ready")
    key = ensure_identity(home, session.uid).api_key
    session.engine_state = {"log_tail": f"INFO non-default args: {{'model': 'x', 'api_key': '{key}'}}\n"
                                        f"INFO serving with --api-key {key}\nINFO token hf_{'a' * 34}"}
    db.session.commit()
    for body in (text(client.get(f"/sessions/{session.name}")),
                 text(client.get(f"/sessions/{session.name}/sections/log", headers=HX))):
        assert key not in body
        assert "hf_aaaa" not in body
        assert "non-default args" in body and "[redacted]" in body


def test_launch_area_shows_the_hourly_rate_before_anything_is_created(app, client):
    app.config["MAIDER_DEMO"] = True
    html = client.get("/").get_data(as_text=True)
    assert "$0.52/h" in html and "what a real VM would cost" in html

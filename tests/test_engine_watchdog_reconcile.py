"""Watchdog (idle, lifetime, budget), reconciler (orphans, vanished VMs), cleanup and the API's token guard."""
from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from app.engine import reconcile, watchdog
from app.extensions import db
from app.models import OrphanInstance, Session, SessionState, utcnow
from app.providers.base import InstanceSpec
from app.services import cleanup as cleanup_service
from app.services import sessions as sessions_service
from engine_helpers import drive, in_state, launch

WARNING = timedelta(minutes=5)


def make_session(**overrides) -> Session:
    uid = uuid.uuid4().hex
    values = dict(uid=uid, name=f"s-{uid[:6]}", provider="linode", label=f"maider-{uid[:12]}", region="us-ord",
                  plan="g2-gpu-rtx4000a1-s", model_id="m/m", served_name="coder", hourly_price=1.0,
                  status=SessionState.READY.value, instance_id="123", provider_created_at=utcnow() - timedelta(hours=1),
                  ready_at=utcnow() - timedelta(minutes=50))
    values.update(overrides)
    session = Session(**values)
    db.session.add(session)
    db.session.commit()
    return session


def test_idle_session_is_warned_then_destroyed(app):
    with app.app_context():
        now = utcnow()
        session = make_session(idle_timeout_minutes=30, last_activity_at=now - timedelta(minutes=26))
        watchdog.check_session(session, now, WARNING)
        assert session.watchdog_warned_at == now and session.destroy_requested_at is None
        assert any("will be destroyed in about 4 min" in e.message for e in session.events)
        watchdog.check_session(session, now + timedelta(minutes=5), WARNING)
        assert session.destroy_requested_at is not None
        assert session.engine_state["destroy_reason"] == "watchdog_idle"


def test_extend_resets_the_idle_timer(app):
    with app.app_context():
        now = utcnow()
        session = make_session(idle_timeout_minutes=30, last_activity_at=now - timedelta(minutes=29),
                               watchdog_warned_at=now)
        sessions_service.extend(session.name, actor="alice")
        watchdog.check_session(session, utcnow(), WARNING)
        assert session.destroy_requested_at is None and session.watchdog_warned_at is None
        assert session.events[-1].actor == "alice"


def test_busy_or_unwatched_sessions_are_left_alone(app):
    with app.app_context():
        now = utcnow()
        busy = make_session(idle_timeout_minutes=30, last_activity_at=now - timedelta(minutes=2))
        unwatched = make_session(idle_timeout_minutes=None, last_activity_at=now - timedelta(days=1))
        for session in (busy, unwatched):
            watchdog.check_session(session, now, WARNING)
            assert session.destroy_requested_at is None


def test_budget_cap_and_lifetime_destroy(app):
    with app.app_context():
        now = utcnow()
        over_budget = make_session(budget_usd=0.5)  # one hour at $1/h
        too_old = make_session(max_lifetime_hours=0.5)
        watchdog.check_session(over_budget, now, WARNING)
        watchdog.check_session(too_old, now, WARNING)
        assert over_budget.engine_state["destroy_reason"] == "budget_exceeded"
        assert too_old.engine_state["destroy_reason"] == "max_lifetime"


def test_watchdog_destroy_goes_through_the_provider(app, linode_world):
    launch(app, "idle", linode_world["workdir"])
    ready = drive(app, "idle", in_state(SessionState.READY, SessionState.FAILED))
    assert ready.status == "ready", ready.status_message
    with app.app_context():
        session = db.session.get(Session, ready.id)
        session.idle_timeout_minutes = 1
        session.last_activity_at = utcnow() - timedelta(minutes=2)
        db.session.commit()
        watchdog.run_once(app)
    gone = drive(app, "idle", in_state(SessionState.DESTROYED))
    assert gone.status_reason == "watchdog_idle" and not linode_world["api"].instances


def test_orphans_are_found_then_destroyed_through_the_provider(app, linode_world):
    api = linode_world["api"]
    stray = api.add_instance("maider-deadbeef0000", tags=["maider"])
    api.add_instance("someone-elses-vm", tags=["web"])
    with app.app_context():
        reconcile.run_once(app)
        orphans = cleanup_service.orphans()
        assert [o.instance_id for o in orphans] == [str(stray["id"])]
        reconcile.run_once(app)  # seen again: still one row
        assert db.session.query(OrphanInstance).count() == 1
        session = cleanup_service.destroy_orphan(orphans[0].id, actor="bob")
        name = session.name
    gone = drive(app, name, in_state(SessionState.DESTROYED))
    assert gone.instance_id == str(stray["id"]) and str(stray["id"]) not in {str(i) for i in api.instances}
    assert len(api.instances) == 1  # the untagged VM is not maider's business


def test_adopted_orphan_is_tracked_with_its_cost(app, linode_world):
    api = linode_world["api"]
    api.add_instance("maider-feedface0000", tags=["maider"])
    with app.app_context():
        reconcile.run_once(app)
        session = cleanup_service.adopt_orphan(cleanup_service.orphans()[0].id)
        assert session.state == SessionState.FAILED and session.destroyed_at is None
        assert sessions_service.is_vm_alive(session)
        assert session in sessions_service.dashboard_overview().sessions


def test_vm_deleted_outside_maider_is_marked_gone_only_after_a_404(app, linode_world):
    api = linode_world["api"]
    launch(app, "vanish", linode_world["workdir"])
    ready = drive(app, "vanish", in_state(SessionState.READY, SessionState.FAILED))
    assert ready.status == "ready", ready.status_message
    api.fail("GET", r"/v4/linode/instances$", 500, times=5)  # the API is down for every retry: nothing changes
    with app.app_context():
        reconcile.run_once(app)
        assert db.session.get(Session, ready.id).status == "ready"
    assert api.count("GET", "/v4/linode/instances", status=500) == 5
    api.instances.clear()  # deleted in the provider's console
    with app.app_context():
        reconcile.run_once(app)
    gone = drive(app, "vanish", in_state(SessionState.DESTROYED))
    assert gone.status_reason == "vanished"


def test_cleanup_keeps_sessions_when_the_api_is_unreachable(app, linode_world):
    api = linode_world["api"]
    with app.app_context():
        session = make_session(instance_id="999999")
        api.fail("GET", r"/v4/linode/instances/999999", 503, times=100)
        result = cleanup_service.cleanup(Path(app.config["MAIDER_HOME"]))
        assert result.removed == [] and "could not ask the provider" in result.kept[0][1]
        assert db.session.get(Session, session.id).destroyed_at is None


def test_cleanup_removes_a_session_only_on_a_404_and_force_needs_a_name(app, linode_world):
    with app.app_context():
        session = make_session(instance_id="424242")
        name, session_id = session.name, session.id
        result = cleanup_service.cleanup(Path(app.config["MAIDER_HOME"]))
        assert result.removed == [name]
        assert db.session.get(Session, session_id).state == SessionState.DESTROYING
    gone = drive(app, name, in_state(SessionState.DESTROYED))
    assert gone.status_reason == "vanished"
    with app.app_context():
        with pytest.raises(Exception, match="--force needs --session"):
            cleanup_service.cleanup(Path(app.config["MAIDER_HOME"]), force=True)


def test_forced_cleanup_forgets_one_session_and_its_keys(app, linode_world):
    from app.engine.identity import ensure_identity, identity_dir

    home = Path(app.config["MAIDER_HOME"])
    with app.app_context():
        session = make_session(instance_id="31337")
        name, uid = session.name, session.uid
        ensure_identity(home, uid)
        result = cleanup_service.cleanup(home, session_name=name, force=True, actor="carol")
        assert result.removed == [name]
        forgotten = sessions_service.get_session(name)
        assert forgotten.state == SessionState.DESTROYED and forgotten.status_reason == "forced_cleanup"
        assert forgotten.events[-1].actor == "carol"
    assert not identity_dir(home, uid).exists()


def test_a_vm_outliving_its_destroyed_session_shows_as_an_orphan(app, linode_world):
    api = linode_world["api"]
    survivor = api.add_instance("maider-0ld5e55i0n00", tags=["maider"])
    with app.app_context():
        make_session(label="maider-0ld5e55i0n00", instance_id=str(survivor["id"]), status="destroyed",
                     destroyed_at=utcnow())
        reconcile.run_once(app)
        assert [o.instance_id for o in cleanup_service.orphans()] == [str(survivor["id"])]


def test_budget_applies_to_a_failed_session_whose_vm_was_kept(app):
    from app.engine.runtime import runtime

    with app.app_context():
        kept = make_session(status="failed", budget_usd=0.5, max_lifetime_hours=0)
        watchdog.run_once(app)
        db.session.refresh(kept)
        assert kept.destroy_requested_at is not None
        assert kept.engine_state["destroy_reason"] == "budget_exceeded"
    runtime(app).close()


def test_api_needs_the_bearer_token(app, client):
    app.config["MAIDER_API_TOKEN"] = "t0ken"
    assert client.get("/api/v1/health").status_code == 200
    assert client.get("/api/v1/sessions").status_code == 401
    assert client.get("/api/v1/sessions", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/api/v1/sessions", headers={"Authorization": "Bearer t0ken"})
    assert ok.status_code == 200 and ok.json["sessions"] == []


def test_api_reports_user_errors_as_json(app, client):
    app.config["MAIDER_API_TOKEN"] = "t0ken"
    headers = {"Authorization": "Bearer t0ken"}
    missing = client.delete("/api/v1/sessions/ghost", headers=headers)
    assert missing.status_code == 404 and "no session named 'ghost'" in missing.json["error"]
    bad = client.post("/api/v1/sessions", json={"name": "x", "max_model_len": "lots"}, headers=headers)
    assert bad.status_code == 400 and "whole number" in bad.json["error"]


def test_simulated_provider_create_is_idempotent_by_label(app, tmp_path):
    from app.providers.simulated import SimulatedProvider
    from app.simulator.vm import VmBehaviour

    provider = SimulatedProvider(tmp_path / "sim", behaviour_for=lambda spec: VmBehaviour.fast())
    from app.engine.identity import ensure_identity
    from app.domain.cloud_init import CloudInitInputs, render_user_data
    from app.domain.vllm_env import DEFAULT_OPEN_WEBUI_IMAGE, DEFAULT_VLLM_IMAGE, Images, VllmSettings, render_env

    identity = ensure_identity(tmp_path, "u1")
    images = Images(DEFAULT_VLLM_IMAGE, DEFAULT_OPEN_WEBUI_IMAGE)
    env = render_env(VllmSettings("m/m", "coder", 4096, 0.9, 1, 1, "auto", "auto", False, ""), "k", None, "w", images)
    user_data = render_user_data(CloudInitInputs(identity.host_private, identity.host_public, identity.client_public,
                                                 env, images, None, "m/m", "h"))
    spec = InstanceSpec(label="maider-same", region="us-ord", plan="g2-gpu-rtx4000a1-s", user_data=user_data)
    try:
        first, second = provider.create(spec), provider.create(spec)
        assert first.id == second.id and len(provider.list_owned()) == 1
    finally:
        provider.close()


def test_monitor_records_activity_gpus_and_log_for_the_panel(app, linode_world):
    import httpx

    from app.engine import monitor
    from app.engine.identity import load_identity

    launch(app, "watched", linode_world["workdir"])
    ready = drive(app, "watched", in_state(SessionState.READY, SessionState.FAILED))
    assert ready.status == "ready", ready.status_message
    with app.app_context():
        monitor.run_once(app)  # baseline scrape
        session = db.session.get(Session, ready.id)
        session.last_activity_at = utcnow() - timedelta(hours=1)
        db.session.commit()
        key = load_identity(Path(app.config["MAIDER_HOME"]), ready.uid).api_key
    reply = httpx.post(f"http://127.0.0.1:{ready.api_port}/v1/completions", timeout=10,
                       headers={"Authorization": f"Bearer {key}"},
                       json={"model": "coder", "prompt": "def add(a, b):", "max_tokens": 8})
    assert reply.status_code == 200
    with app.app_context():
        monitor.run_once(app)
        session = db.session.get(Session, ready.id)
        assert utcnow() - session.last_activity_at < timedelta(minutes=1)
        assert session.engine_state["gpus"][0]["name"].startswith("NVIDIA RTX 4000 Ada")
        assert "Application startup complete" in session.engine_state["log_tail"]
        assert session.tunnel_state == "up"


def test_maiders_own_probes_are_not_activity(app, linode_world):
    """The monitor's scrapes and health probes go through the tunnel too; an idle VM must still look idle."""
    from app.engine import monitor

    launch(app, "quiet", linode_world["workdir"])
    ready = drive(app, "quiet", in_state(SessionState.READY, SessionState.FAILED))
    assert ready.status == "ready", ready.status_message
    with app.app_context():
        monitor.run_once(app)  # the first scrape is the baseline
        first = db.session.get(Session, ready.id).last_activity_at
        db.session.remove()
    for _ in range(3):
        time.sleep(0.3)
        with app.app_context():
            monitor.run_once(app)
            db.session.remove()
    with app.app_context():
        assert db.session.get(Session, ready.id).last_activity_at == first

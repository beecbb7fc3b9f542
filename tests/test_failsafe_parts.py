"""The failsafe's parts: its arithmetic, the script's lint and the cloud-config it ships in, the token calls through
the real linode_api4 SDK, the demo cloud's own API, extend on the VM, and the per-launch limits of the API and CLI."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from app.domain import failsafe as rules
from app.domain import vm_contract
from app.domain.cloud_init import FAILSAFE_SCRIPT, FAILSAFE_TIMER_PATH, PROVISION_SCRIPT, TEMPLATE_DIR
from app.engine import monitor
from app.extensions import db
from app.models import Session, SessionState, utcnow
from app.providers.base import AuthError, SessionToken
from app.providers.linode import LinodeProvider
from app.providers.simulated import SimulatedProvider
from app.services import sessions as sessions_service
from app.simulator.vm import VmBehaviour
from engine_helpers import LINODE_TOKEN, drive, in_state, launch, wait_for, write_project
from fakes.linode_api import FakeLinodeApi
from test_cloud_init import _inputs

NOW = datetime(2026, 12, 1, 9, 0, 0)


# the arithmetic

def test_token_expiry_follows_the_hard_lifetime_capped_by_max_lifetime_hours():
    started = NOW - timedelta(minutes=10)
    assert rules.token_expiry(NOW, started, 4, 8) == started + timedelta(hours=5)  # lifetime + 1 h margin
    assert rules.token_expiry(NOW, started, 4, 2) == NOW + timedelta(hours=2)  # never beyond MAX_LIFETIME_HOURS
    assert rules.token_expiry(NOW, started, None, None) == NOW + timedelta(hours=24)  # none set: a day, renewed
    assert rules.token_expiry(NOW, started, None, 6) == NOW + timedelta(hours=6)


def test_renewal_only_when_the_token_runs_out_before_the_session_does():
    soon = NOW + timedelta(minutes=90)
    assert rules.needs_renewal(NOW, soon, None)  # no lifetime: renew before it runs out
    assert not rules.needs_renewal(NOW, NOW + timedelta(hours=20), None)
    assert not rules.needs_renewal(NOW, soon, NOW + timedelta(minutes=20))  # the VM goes before the token anyway


def test_the_token_always_outlives_a_silence_that_starts_now():
    """Laptop closed at any moment: the VM's silence rule fires ``silence`` later, and its token must still work."""
    silence = 180  # --idle-minutes 180, no lifetime
    expiry = rules.token_expiry(NOW, NOW, None, None, silence)
    assert expiry >= NOW + timedelta(minutes=silence) + rules.TOKEN_MARGIN
    # Renewal comes while a silence starting then would still be covered, not 2 h before expiry regardless.
    late = expiry - timedelta(minutes=silence) - rules.TOKEN_MARGIN - rules.RENEW_BEFORE
    assert rules.needs_renewal(late, expiry, None, silence)
    assert not rules.needs_renewal(late - timedelta(minutes=1), expiry, None, silence)
    long = 7 * 24 * 60  # FAILSAFE_MINUTES of a week: the token is made to last past it
    assert rules.token_expiry(NOW, NOW, None, None, long) >= NOW + timedelta(minutes=long)


def test_silence_limit_and_the_next_deadline():
    assert rules.silence_minutes(None, None) == 30
    assert rules.silence_minutes(None, 60) == 60
    assert rules.silence_minutes(15, 60) == 15
    limits = rules.Limits(silence_minutes=30, max_lifetime_hours=2, budget_usd=1.0, hourly_price=1.0,
                          started_at=NOW - timedelta(minutes=50))
    assert rules.next_deadline(NOW, limits) == (NOW + timedelta(minutes=10), "budget of $1.00 spent")
    assert rules.next_deadline(NOW - timedelta(minutes=25), limits)[1] == "maider silent for 30 min"
    assert rules.explain_end(NOW, NOW - timedelta(minutes=5), limits) is None  # nothing could have fired yet
    assert rules.explain_end(NOW + timedelta(hours=1), NOW, limits) == ("budget of $1.00 spent",
                                                                        NOW + timedelta(minutes=10))


def test_autostop_names_the_nearest_limit():
    left = rules.autostop_in(NOW, idle_timeout_minutes=60, idle_since=NOW - timedelta(minutes=45),
                             started_at=NOW - timedelta(hours=1), max_lifetime_hours=8, budget_usd=None,
                             hourly_price=0.52)
    assert left == (timedelta(minutes=15), "idle")
    assert rules.autostop_in(NOW, idle_timeout_minutes=None, idle_since=None, started_at=NOW, max_lifetime_hours=None,
                             budget_usd=None, hourly_price=1.0) is None
    assert rules.format_left(timedelta(minutes=65)) == "1 h 05 min" and rules.format_left(timedelta(0)) == "<1 min"


# the script and its cloud-config

def test_failsafe_script_passes_ruff():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([ruff, "check", "--no-cache", "--isolated", "--select", "E,F,W,B,UP,RUF,EXE",
                             "--line-length", "120", str(TEMPLATE_DIR / "maider-failsafe.py")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cloud_config_installs_the_failsafe_and_passes_the_schema(tmp_path):
    from app.domain.cloud_init import render_user_data

    user_data = render_user_data(_inputs())
    config = yaml.safe_load(user_data)
    files = {entry["path"]: entry for entry in config["write_files"]}
    script = files[FAILSAFE_SCRIPT]
    assert script["permissions"] == "0755" and "{{" not in script["content"]
    assert vm_contract.FAILSAFE_CONFIG in script["content"]
    assert vm_contract.FAILSAFE_CONFIG not in files  # its configuration (and token) comes over SSH only
    assert "OnUnitActiveSec=1min" in files[FAILSAFE_TIMER_PATH]["content"]
    assert f"systemctl enable --now '{vm_contract.FAILSAFE_TIMER}'" in files[PROVISION_SCRIPT]["content"]
    compile(script["content"], FAILSAFE_SCRIPT, "exec")
    if shutil.which("cloud-init") is None:
        pytest.skip("cloud-init is not installed")
    path = tmp_path / "user-data"
    path.write_text(user_data)
    result = subprocess.run(["cloud-init", "schema", "-c", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# the token calls, through the real SDK

def test_linode_mints_a_scoped_expiring_token_and_revokes_it_idempotently():
    with FakeLinodeApi(token=LINODE_TOKEN) as api:
        provider = LinodeProvider(LINODE_TOKEN, base_url=api.base_url, sleep=lambda _s: None)
        expires = utcnow().replace(microsecond=0) + timedelta(hours=3)
        token = provider.mint_session_token("maider-abc-failsafe", expires)
        assert isinstance(token, SessionToken) and token.api_url == api.base_url
        assert token.token.reveal() not in repr(token)
        [request] = api.matching("POST", "/v4/profile/tokens")
        assert request.json == {"label": "maider-abc-failsafe", "scopes": "linodes:read_write",
                                "expiry": expires.isoformat()}
        instance = api.add_instance("maider-abc", tags=["maider"])
        minted = LinodeProvider(token.token.reveal(), base_url=api.base_url, sleep=lambda _s: None)
        minted.delete(str(instance["id"]))  # what the VM's failsafe may do with it
        assert api.deletions[instance["id"]] == f"token:{token.id}"
        assert provider.deleted_at(str(instance["id"])) is not None
        provider.revoke_session_token(token.id)
        provider.revoke_session_token(token.id)  # already gone: still fine
        assert api.count("DELETE", f"/v4/profile/tokens/{token.id}") == 2 and not api.tokens
        with pytest.raises(AuthError):  # a revoked token opens nothing
            minted.get(str(instance["id"]))


# the demo cloud runs the same script against its own API

def test_demo_vm_deletes_itself_through_the_simulated_cloud_api(app, tmp_path):
    home = Path(app.config["MAIDER_HOME"])
    provider = SimulatedProvider(home, behaviour_for=lambda spec: VmBehaviour.fast(failsafe_speed=30,
                                                                                   failsafe_tick_s=0.1))
    app.config["MAIDER_PROVIDER_FACTORY"] = lambda name, settings, home: provider
    app.config["MAIDER_TIMINGS"] = {"poll_first": 0.05, "poll_max": 0.25, "destroy_retry_max": 0.2,
                                    "ssh_connect_timeout": 2, "http_timeout": 2}
    workdir = Path(app.config["MAIDER_WORKDIR"])
    write_project(workdir, "MAIDER_PROVIDER=simulated\nREGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\n"
                           "MODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\nVLLM_MAX_MODEL_LEN=8192\nFAILSAFE_MINUTES=1\n")
    try:
        launch(app, "demo", workdir)
        ready = drive(app, "demo", in_state(SessionState.READY, SessionState.FAILED))
        assert ready.status == "ready", ready.status_message
        vm = provider.vm(ready.instance_id)
        wait_for(lambda: provider.deleted_at(ready.instance_id) is not None, timeout=30)
        assert not provider.list_owned()
        wait_for(lambda: any("deleted instance" in line for line in vm.failsafe_log))
    finally:
        from app.engine.runtime import runtime

        runtime(app).close()
        provider.close()


# extend moves the VM's clock too

def test_extend_rearms_the_vm_with_a_fresh_idle_clock(app, linode_world):
    write_project(linode_world["workdir"], "REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\n"
                  "MODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\nVLLM_MAX_MODEL_LEN=8192\nWATCHDOG_ENABLED=true\n",
                  f"LINODE_TOKEN={LINODE_TOKEN}\n")
    launch(app, "kept", linode_world["workdir"])
    ready = drive(app, "kept", in_state(SessionState.READY, SessionState.FAILED))
    vm = linode_world["vms"][-1]
    config_path = Path(vm.failsafe_path(vm_contract.FAILSAFE_CONFIG))
    before = json.loads(config_path.read_text())
    time.sleep(1.1)  # armed_at has a resolution of one second
    with app.app_context():
        sessions_service.extend("kept", actor="alice")
        monitor.run_once(app)
        session = db.session.get(Session, ready.id)
        messages = [e.message for e in session.events]
    after = json.loads(config_path.read_text())
    assert after["armed_at"] > before["armed_at"] and after["token"] != before["token"]
    assert "failsafe clock reset on the VM (extend)" in messages
    api = linode_world["api"]
    assert len(api.tokens) == 1 and len(api.revoked_tokens) == 1  # the old token went with the re-arm


# per-launch limits: API and CLI

def test_api_takes_per_launch_limits_and_refuses_bad_ones(app, client):
    from test_api_input import AUTH, TOKEN

    app.config.update(MAIDER_API_TOKEN=TOKEN, MAIDER_DEMO=True)
    try:
        for body, words in (({"idle_minutes": -1}, "idle_minutes"), ({"max_hours": "8"}, "must be a number"),
                            ({"budget_usd": True}, "must be a number"), ({"max_hours": 10_000}, "between")):
            response = client.post("/api/v1/sessions", json=body, headers=AUTH)
            assert response.status_code == 400 and words in response.get_data(as_text=True), response.get_json()
        response = client.post("/api/v1/sessions", headers=AUTH, json={
            "name": "limited", "idle_minutes": 15, "max_hours": 2.5, "budget_usd": 4})
        assert response.status_code == 201, response.get_data(as_text=True)
        with app.app_context():
            session = sessions_service.get_session("limited")
            assert (session.idle_timeout_minutes, session.max_lifetime_hours, session.budget_usd) == (15, 2.5, 4.0)
        response = client.post("/api/v1/sessions", headers=AUTH, json={"name": "no-idle", "idle_minutes": 0})
        with app.app_context():
            assert sessions_service.get_session("no-idle").idle_timeout_minutes is None
        assert response.get_json()["autostop_seconds"] is None  # not ready yet: nothing counts down
    finally:
        from app.engine.runtime import runtime

        runtime(app).close()


def test_cli_shows_time_left_before_autostop(app, linode_world, monkeypatch):
    from click.testing import CliRunner

    from app.cli import sessions as cli_sessions
    from app.web.api.serialize import session_json

    write_project(linode_world["workdir"], "REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\n"
                  "MODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\nVLLM_MAX_MODEL_LEN=8192\nWATCHDOG_ENABLED=true\n"
                  "WATCHDOG_TIMEOUT_MINUTES=60\n", f"LINODE_TOKEN={LINODE_TOKEN}\n")
    launch(app, "timed", linode_world["workdir"])
    drive(app, "timed", in_state(SessionState.READY, SessionState.FAILED))
    with app.app_context():
        shown = session_json(sessions_service.get_session("timed"))
    assert 58 * 60 <= shown["autostop_seconds"] <= 60 * 60 and shown["autostop_reason"] == "idle"
    assert shown["failsafe_minutes"] == 60 and shown["failsafe_deadline"].endswith("Z")

    class Client:  # what the server answers, as the CLI's client hands it over
        url = "http://127.0.0.1:9"
        demo = False

        def get(self, path):
            if path == "/sessions":
                return {"sessions": [shown], "totals": {"burn_rate": 0.52, "spent_today": 0, "spent_total": 0}}
            if path.endswith("/events"):
                return {"events": []}
            return shown

    monkeypatch.setattr(cli_sessions, "connect", Client)
    monkeypatch.setattr(cli_sessions, "resolve_name", lambda name: name or "timed")
    listing = CliRunner().invoke(cli_sessions.list_sessions, [])
    assert "AUTOSTOP IN" in listing.output and "min (idle)" in listing.output, listing.output
    status = CliRunner().invoke(cli_sessions.status, ["timed"])
    assert "autostop in " in status.output and "failsafe armed: this VM deletes itself if maider is silent for 60 " \
        "min" in status.output, status.output


# autostop on by default, and the settings page says what the failsafe's token can reach

def test_new_configurations_get_autostop_and_a_chosen_one_is_kept(tmp_path):
    from app.services import wizard

    home = tmp_path / "maider-home"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    updates = wizard.env_updates(wizard.open_context(fresh, home, demo=True), wizard.Choices(region="us-ord"))
    assert updates["WATCHDOG_ENABLED"] == "true" and updates["WATCHDOG_TIMEOUT_MINUTES"] == "60"
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    (chosen / ".env").write_text("WATCHDOG_ENABLED=false\n")
    updates = wizard.env_updates(wizard.open_context(chosen, home, demo=True), wizard.Choices(region="us-ord"))
    assert "WATCHDOG_ENABLED" not in updates and "WATCHDOG_TIMEOUT_MINUTES" not in updates


def test_settings_page_explains_the_failsafe_token_and_how_to_turn_it_off(app, client):
    page = client.get("/settings/").get_data(as_text=True)
    assert "Linode cannot limit a token to one instance" in page and "FAILSAFE=off" in page
    (Path(app.config["MAIDER_WORKDIR"]) / ".env").write_text("FAILSAFE=off\n")
    page = client.get("/settings/").get_data(as_text=True)
    assert "Failsafe <strong>off</strong>" in page


def test_a_token_about_to_run_out_is_renewed_while_the_session_lives(app, linode_world):
    launch(app, "long", linode_world["workdir"])
    ready = drive(app, "long", in_state(SessionState.READY, SessionState.FAILED))
    api = linode_world["api"]
    [first] = api.tokens
    with app.app_context():
        session = db.session.get(Session, ready.id)
        state = dict(session.engine_state)
        state["failsafe"] = {**state["failsafe"], "expires_at": (utcnow() + timedelta(minutes=50)).isoformat()}
        session.engine_state = state
        db.session.commit()
        monitor.run_once(app)
        messages = [e.message for e in db.session.get(Session, ready.id).events]
    [second] = api.tokens
    assert second != first and first in api.revoked_tokens
    assert any(m.startswith("failsafe token renewed") for m in messages)
    config = json.loads(Path(linode_world["vms"][-1].failsafe_path(vm_contract.FAILSAFE_CONFIG)).read_text())
    assert config["token"] == api.tokens[second]["token"]


def test_cli_wizard_says_autostop_is_on_for_a_new_configuration(monkeypatch):
    from click.testing import CliRunner

    from app.cli.wizard import wizard
    from app.config import load_settings

    monkeypatch.setenv("TZ", "UTC")
    result = CliRunner().invoke(wizard, ["--demo", "--yes"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "autostop: an idle VM is destroyed after 60 min" in result.output
    settings = load_settings(Path.cwd())
    assert settings.watchdog_enabled and settings.watchdog_timeout_minutes == 60 and settings.failsafe


def test_a_refused_token_leaves_the_launch_going_and_says_the_failsafe_is_off(app, linode_world, client):
    api = linode_world["api"]
    api.fail("POST", r"/v4/profile/tokens$", 403, times=1)
    launch(app, "no-mint", linode_world["workdir"])
    ready = drive(app, "no-mint", in_state(SessionState.READY, SessionState.FAILED))
    assert ready.status == "ready", ready.status_message
    assert not api.tokens and not Path(linode_world["vms"][-1].failsafe_path(vm_contract.FAILSAFE_CONFIG)).exists()
    with app.app_context():
        warnings = [e.message for e in db.session.get(Session, ready.id).events if e.kind == "warning"]
    assert any("failsafe not armed (the provider refused to mint its token" in w for w in warnings)
    page = client.get(f"/sessions/no-mint?uid={ready.uid}").get_data(as_text=True)
    assert "Failsafe off: only maider on this laptop can stop this VM" in page


def test_a_failed_launchs_kept_vm_hears_maider_while_it_runs(app, linode_world):
    launch(app, "kept-vm", linode_world["workdir"], keep_on_failure=True)
    ready = drive(app, "kept-vm", in_state(SessionState.READY, SessionState.FAILED))
    with app.app_context():
        session = db.session.get(Session, ready.id)
        session.status = SessionState.FAILED.value  # as a launch that failed after arming, its VM kept
        state = dict(session.engine_state)
        state["failsafe"] = {**state["failsafe"], "heartbeat_at": "2000-01-01T00:00:00"}
        session.engine_state = state
        db.session.commit()
        monitor.run_once(app)
        beat = db.session.get(Session, ready.id).engine_state["failsafe"]["heartbeat_at"]
    assert beat > "2026"


def test_the_vm_reads_maiders_times_on_its_own_clock(tmp_path, monkeypatch):
    """A laptop clock 20 minutes behind must not make the VM think a 1-minute-old session is 21 minutes old."""
    import importlib.util
    import json
    import time

    from app.domain import vm_contract
    from app.domain.cloud_init import TEMPLATE_DIR, fill_template

    script = tmp_path / "failsafe.py"
    script.write_text(fill_template((TEMPLATE_DIR / "maider-failsafe.py").read_text()))
    monkeypatch.setenv("MAIDER_FAILSAFE_ROOT", str(tmp_path / "root"))
    spec = importlib.util.spec_from_file_location("maider_failsafe_under_test", script)
    failsafe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(failsafe)

    laptop_now = time.time() - 20 * 60  # the laptop is 20 minutes behind the VM
    config = {"instance_id": "1", "api_url": "http://127.0.0.1:1", "token": "t", "silence_minutes": 30,
              "max_lifetime_hours": 0.1, "budget_usd": 0, "hourly_price": 0.52,
              "started_at": laptop_now - 60, "armed_at": laptop_now, "written_at": laptop_now}
    path = tmp_path / "root" / vm_contract.FAILSAFE_CONFIG.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(config))  # written now, on the VM's clock
    assert failsafe.reason_to_delete(config, time.time()) is not None  # read naively: "lifetime reached"
    assert failsafe.reason_to_delete(failsafe.on_this_clock(config), time.time()) is None
    six_minutes_later = time.time() + 6 * 60  # the 0.1 h lifetime has passed on the VM's clock
    assert "lifetime" in failsafe.reason_to_delete(failsafe.on_this_clock(config), six_minutes_later)

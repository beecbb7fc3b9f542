"""The on-VM failsafe end to end: the real linode_api4 SDK against the fake Linode API, a simulated VM that runs the
very script cloud-init installs (on a compressed clock), and maider's engine driven step by step -- or not at all,
which is what a closed laptop looks like."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from app.domain import vm_contract
from app.engine import reconcile
from app.engine.identity import load_identity
from app.engine.runtime import runtime
from app.extensions import db
from app.models import Session, SessionState, utcnow
from app.services import sessions as sessions_service
from app.simulator.vm import VmBehaviour
from engine_helpers import drive, in_state, launch, wait_for, write_project

SPEED = 30.0  # the VM's failsafe clock: one simulated minute in two real seconds
LIMIT_S = 60 / SPEED  # FAILSAFE_MINUTES=1, in real seconds
PROJECT = ("REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\nMODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\n"
           "VLLM_MAX_MODEL_LEN=8192\n")


@pytest.fixture
def world(linode_world):
    """The Linode world with compressed failsafe clocks; a deleted instance powers its VM off, as on Linode."""
    api, vms = linode_world["api"], linode_world["vms"]
    linode_world["behaviour"]["value"] = VmBehaviour.fast(failsafe_speed=SPEED, failsafe_tick_s=0.1)
    deleted: dict[int, dict] = {}

    def on_delete(instance_id: int) -> None:
        vm = vms[-1]
        beat = vm.failsafe_path(vm_contract.FAILSAFE_HEARTBEAT)
        deleted[instance_id] = {"at": time.time(), "heartbeat": os.stat(beat).st_mtime if os.path.exists(beat)
                                else None, "vm": vm}
        threading.Thread(target=vm.stop, daemon=True).start()  # the caller may be this VM's own failsafe

    api.on_delete = on_delete
    linode_world["deleted"] = deleted
    return linode_world


def _ready(app, world, name: str, extra_env: str = "") -> Session:
    write_project(world["workdir"], PROJECT + extra_env, f"LINODE_TOKEN={world['api'].token}\n")
    launch(app, name, world["workdir"])
    ready = drive(app, name, in_state(SessionState.READY, SessionState.FAILED))
    assert ready.status == "ready", ready.status_message
    return ready


def _token_request(api):
    [minted] = api.matching("POST", "/v4/profile/tokens")
    return minted


def test_token_is_minted_for_linodes_only_reaches_the_vm_over_ssh_and_is_revoked_at_down(app, world, client, caplog):
    caplog.set_level(logging.DEBUG)
    api = world["api"]
    ready = _ready(app, world, "guarded", "MAX_LIFETIME_HOURS=3\nWATCHDOG_ENABLED=true\nWATCHDOG_TIMEOUT_MINUTES=45\n")

    minted = _token_request(api)
    assert minted.status == 200 and minted.auth == "owner"
    assert minted.json["scopes"] == "linodes:read_write"
    expiry = datetime.fromisoformat(minted.json["expiry"])
    # the hard lifetime (3 h from the VM's creation) plus a margin, but never longer than MAX_LIFETIME_HOURS
    assert utcnow() + timedelta(hours=3) - timedelta(minutes=2) <= expiry <= utcnow() + timedelta(hours=3)
    [token] = api.tokens.values()
    secret = token["token"]

    vm = world["vms"][-1]
    config_path = vm.failsafe_path(vm_contract.FAILSAFE_CONFIG)
    config = json.loads(Path(config_path).read_text())
    assert config["token"] == secret and os.stat(config_path).st_mode & 0o777 == 0o600
    assert config["instance_id"] == ready.instance_id and config["api_url"] == api.base_url
    assert config["silence_minutes"] == 45  # no FAILSAFE_MINUTES: the idle timeout

    assert secret not in api.create_bodies[int(ready.instance_id)]["user_data"]  # never in user data
    home = Path(app.config["MAIDER_HOME"])
    for path in home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"the token is in {path}"
    assert secret not in caplog.text
    page = client.get(f"/sessions/{ready.name}?uid={ready.uid}").get_data(as_text=True)
    assert "Failsafe armed: this VM deletes itself if maider is silent for 45 min" in page
    assert secret not in page

    with app.app_context():
        sessions_service.request_destroy("guarded", actor="tester")
    gone = drive(app, "guarded", in_state(SessionState.DESTROYED))
    assert not api.tokens and token["id"] in api.revoked_tokens
    assert api.deletions[int(gone.instance_id)] == "owner"  # maider deleted it, not the failsafe
    with app.app_context():
        messages = [e.message for e in db.session.get(Session, gone.id).events]
    assert f"failsafe token {token['id']} revoked" in messages


def test_with_maider_gone_the_vm_deletes_itself_and_the_panel_says_so_when_it_wakes(app, world):
    api = world["api"]
    ready = _ready(app, world, "forgotten", "FAILSAFE_MINUTES=1\n")
    instance_id = int(ready.instance_id)
    token_id = next(iter(api.tokens))

    # maider serve is gone: nothing drives the engine, nothing touches the heartbeat
    wait_for(lambda: instance_id in world["deleted"], timeout=30)
    deletion = world["deleted"][instance_id]
    assert api.deletions[instance_id] == f"token:{token_id}"  # the VM's own token did it
    assert deletion["at"] - deletion["heartbeat"] <= 2 * LIMIT_S
    wait_for(lambda: any("deleting this VM: maider silent" in line for line in deletion["vm"].failsafe_log))

    # the laptop wakes an hour later: the history says who deleted the VM, and the cost stops at the deletion
    woke = utcnow() + timedelta(hours=1)
    runtime(app).clock = lambda: woke
    with app.app_context():
        reconcile.run_once(app)
    gone = drive(app, "forgotten", in_state(SessionState.DESTROYED))
    assert gone.status_reason == "failsafe"
    assert "the failsafe on the VM deleted it" in gone.status_message and "maider silent for 1 min" in \
        gone.status_message
    assert gone.destroyed_at < woke - timedelta(minutes=50)  # the provider's deletion time, not the wake-up
    with app.app_context():
        actors = {e.actor for e in db.session.get(Session, gone.id).events if e.kind == "state"}
        cost = sessions_service.session_cost(db.session.get(Session, gone.id), now=woke)
    assert "failsafe" in actors
    assert cost.runtime < timedelta(minutes=5) and cost.cost < 0.52 / 12  # minutes, not the hour it slept


def test_requests_through_the_tunnel_keep_the_vm_alive_while_maider_is_silent(app, world):
    ready = _ready(app, world, "busy", "FAILSAFE_MINUTES=1\n")
    with app.app_context():
        key = load_identity(Path(app.config["MAIDER_HOME"]), ready.uid).api_key
    url = f"http://127.0.0.1:{ready.api_port}/v1/chat/completions"
    body = {"model": "coder", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    vm = world["vms"][-1]
    until = time.monotonic() + 4 * LIMIT_S
    while time.monotonic() < until:  # aider at work: maider's monitor silent, the tunnel busy
        assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 200
        time.sleep(LIMIT_S / 5)
    assert int(ready.instance_id) in world["api"].instances
    assert any("keeping" in line for line in vm.failsafe_log)  # it did look, and saw the requests

    wait_for(lambda: int(ready.instance_id) in world["deleted"], timeout=30)  # quiet again: now it goes


@pytest.mark.parametrize(("setting", "reason"), [
    ("MAX_LIFETIME_HOURS=0.05\n", "maximum lifetime of 0.05 h reached"),  # 3 simulated minutes
    ("BUDGET_USD=0.03\n", "budget of $0.03 spent"),  # at $0.52/h: about 3.5 simulated minutes
])
def test_lifetime_and_budget_fire_on_the_vm_with_the_laptop_off(app, world, setting, reason):
    ready = _ready(app, world, "capped", "FAILSAFE_MINUTES=600\n" + setting)
    wait_for(lambda: int(ready.instance_id) in world["deleted"], timeout=40)
    vm = world["deleted"][int(ready.instance_id)]["vm"]
    wait_for(lambda: any(f"deleting this VM: {reason}" in line for line in vm.failsafe_log))


def test_failsafe_off_mints_no_token_and_says_so(app, world):
    ready = _ready(app, world, "unguarded", "FAILSAFE=off\n")
    assert not world["api"].matching("POST", "/v4/profile/tokens")
    assert not os.path.exists(world["vms"][-1].failsafe_path(vm_contract.FAILSAFE_CONFIG))
    with app.app_context():
        messages = [e.message for e in db.session.get(Session, ready.id).events]
    assert any(m.startswith("failsafe off (FAILSAFE=off)") for m in messages)


def test_a_laptop_closed_while_cloud_init_runs_still_leaves_no_vm_billing(app, world):
    """The failsafe is armed as soon as SSH answers; while maider polls cloud-init, each poll is a heartbeat."""
    world["behaviour"]["value"] = VmBehaviour.fast(configure_s=60, failsafe_speed=SPEED, failsafe_tick_s=0.1)
    write_project(world["workdir"], PROJECT + "FAILSAFE_MINUTES=1\n", f"LINODE_TOKEN={world['api'].token}\n")
    launch(app, "early", world["workdir"])
    armed = drive(app, "early", lambda s: (s.engine_state or {}).get("failsafe", {}).get("token_id")
                  or s.state in (SessionState.READY, SessionState.FAILED))
    assert armed.status == "configuring"  # cloud-init is still installing drivers
    with app.app_context():
        kinds = [e.message for e in db.session.get(Session, armed.id).events]
    assert "cloud-init finished" not in kinds
    assert os.path.exists(world["vms"][-1].failsafe_path(vm_contract.FAILSAFE_CONFIG))
    # The laptop closes here: nothing drives the engine any more.
    wait_for(lambda: world["deleted"], timeout=4 * LIMIT_S + 5)
    assert int(armed.instance_id) in world["deleted"]

"""Bad input and faults during a launch: each ends with a clear message and loses nothing -- no leaked VM, no second
VM, no session dropped before the provider confirms the deletion."""
from __future__ import annotations


import pytest

from app import create_app
from app.engine.runtime import runtime
from app.extensions import db
from app.models import Session, SessionState
from app.services import sessions as sessions_service
from app.simulator.vm import VmBehaviour
from engine_helpers import FAST_TIMINGS, drive, in_state, launch

INSTANCES = "/v4/linode/instances"
FINAL = (SessionState.READY, SessionState.FAILED, SessionState.DESTROYED)


def _events(app, session_id: int) -> list[str]:
    with app.app_context():
        return [f"{e.kind}: {e.message}" for e in db.session.get(Session, session_id).events]


def _fail_with(linode_world, app, behaviour: VmBehaviour, name: str, **timings) -> Session:
    linode_world["behaviour"]["value"] = behaviour
    app.config["MAIDER_TIMINGS"] = {**FAST_TIMINGS, **timings}
    launch(app, name, linode_world["workdir"])
    return drive(app, name, in_state(*FINAL))


def test_wrong_token_fails_with_the_fix_and_creates_nothing(app, linode_world):
    api = linode_world["api"]
    launch(app, "auth", linode_world["workdir"])
    api.fail("POST", INSTANCES + "$", 401, times=10)
    failed = drive(app, "auth", in_state(*FINAL))
    assert failed.status == "failed"
    assert "Linode refused the token" in failed.status_message and "LINODE_TOKEN" in failed.status_message
    assert not api.instances


def test_rate_limit_storm_during_create_is_waited_out_and_makes_one_vm(app, linode_world):
    api = linode_world["api"]
    launch(app, "storm", linode_world["workdir"])
    api.fail("POST", INSTANCES + "$", 429, times=8, retry_after=1)
    ready = drive(app, "storm", in_state(*FINAL))
    assert ready.status == "ready", ready.status_message
    assert api.count("POST", INSTANCES, status=200) == 1 and len(api.instances) == 1
    assert any("will retry" in e for e in _events(app, ready.id))


def test_server_errors_during_create_retry_until_the_deadline_then_fail_cleanly(app, linode_world):
    api = linode_world["api"]
    app.config["MAIDER_TIMINGS"] = {**FAST_TIMINGS, "create_deadline": 0.5}
    launch(app, "five-hundred", linode_world["workdir"])
    api.fail("POST", INSTANCES + "$", 500, times=1000)
    failed = drive(app, "five-hundred", in_state(*FINAL))
    assert failed.status == "failed" and "could not create the VM" in failed.status_message
    assert not api.instances


def test_502_after_the_vm_was_created_still_makes_exactly_one_vm(app, linode_world):
    api = linode_world["api"]
    launch(app, "bad-gateway", linode_world["workdir"])
    api.fail("POST", INSTANCES + "$", 502, after_effect=True)
    ready = drive(app, "bad-gateway", in_state(*FINAL))
    assert ready.status == "ready", ready.status_message
    assert len(api.instances) == 1 and len(linode_world["vms"]) == 1


def test_vm_never_reachable_by_ssh_fails_and_is_destroyed(app, linode_world):
    failed = _fail_with(linode_world, app, VmBehaviour.fast(ssh_never=True), "no-ssh", boot_deadline=1.0)
    assert failed.status == "failed" and failed.status_reason == "ssh_unreachable"
    assert "did not answer SSH" in failed.status_message
    assert failed.destroyed_at is not None and not linode_world["api"].instances
    assert linode_world["api"].count("DELETE") == 1


def test_foreign_host_key_is_refused_and_the_vm_destroyed(app, linode_world):
    failed = _fail_with(linode_world, app, VmBehaviour.fast(wrong_host_key=True), "mitm")
    assert failed.status == "failed" and failed.status_reason == "host_key_mismatch"
    assert "host key" in failed.status_message
    assert not linode_world["api"].instances


def test_cloud_init_error_fails_with_the_log_tail_and_destroys(app, linode_world):
    failed = _fail_with(linode_world, app, VmBehaviour.fast(cloud_init_error=True), "ci-error")
    assert failed.status == "failed" and failed.status_reason == "cloud_init_error"
    assert not linode_world["api"].instances
    with app.app_context():
        error = next(e for e in db.session.get(Session, failed.id).events if e.kind == "error")
        assert error.detail["log_tail"]


def test_vllm_never_ready_times_out_and_destroys(app, linode_world):
    failed = _fail_with(linode_world, app, VmBehaviour.fast(vllm_failure="never_ready"), "stuck",
                        start_deadline=1.5)
    assert failed.status == "failed" and failed.status_reason == "launch_timeout"
    assert not linode_world["api"].instances


def test_keep_on_failure_leaves_the_vm_and_says_it_is_billed(app, linode_world):
    linode_world["behaviour"]["value"] = VmBehaviour.fast(vllm_failure="gated")
    launch(app, "keep", linode_world["workdir"], keep_on_failure=True)
    failed = drive(app, "keep", in_state(*FINAL))
    assert failed.status == "failed" and failed.destroyed_at is None
    assert "still billed" in failed.status_message
    assert len(linode_world["api"].instances) == 1
    with app.app_context():
        sessions_service.request_destroy("keep")
    gone = drive(app, "keep", in_state(SessionState.DESTROYED))
    assert gone.destroyed_at is not None and not linode_world["api"].instances


def test_gated_model_is_not_retried_and_tells_the_user_what_to_do(app, linode_world):
    failed = _fail_with(linode_world, app, VmBehaviour.fast(vllm_failure="gated"), "gated")
    assert failed.status == "failed" and failed.heal_attempts == 0
    assert "HUGGING_FACE_HUB_TOKEN" in failed.status_message or "licence" in failed.status_message
    assert not linode_world["api"].instances


@pytest.mark.parametrize("failure, expect_key, expect_value", [
    ("kv_too_small", "max_model_len", 4096),
    ("bf16_turing", "dtype", "half"),
])
def test_known_start_failures_are_healed(app, linode_world, failure, expect_key, expect_value):
    behaviour = VmBehaviour.fast(vllm_failure=failure, fitting_len=4500)
    ready = _fail_with(linode_world, app, behaviour, f"heal-{failure.replace('_', '-')}")
    assert ready.status == "ready", ready.status_message
    assert ready.vllm_config[expect_key] == expect_value
    heals = [e for e in _events(app, ready.id) if e.startswith("heal:")]
    assert len(heals) == 1


def test_warmup_oom_needs_two_attempts_each_stronger(app, linode_world):
    behaviour = VmBehaviour.fast(vllm_failure="warmup_oom", warmup_oom_max_utilization=0.82)
    ready = _fail_with(linode_world, app, behaviour, "oom")
    assert ready.status == "ready", ready.status_message
    heals = [e for e in _events(app, ready.id) if e.startswith("heal:")]
    assert len(heals) >= 2, heals
    assert ready.vllm_config["gpu_memory_utilization"] < 0.82


def test_restart_mid_launch_resumes_without_a_second_vm(app, linode_world, tmp_path):
    api = linode_world["api"]
    launch(app, "resume", linode_world["workdir"])
    drive(app, "resume", in_state(SessionState.CONFIGURING, SessionState.REBOOTING, SessionState.STARTING))
    runtime(app).close()  # maider is killed: its connections and tunnels are gone, the rows stay
    restarted = create_app({**{k: app.config[k] for k in ("MAIDER_HOME", "MAIDER_WORKDIR",
                                                           "SQLALCHEMY_DATABASE_URI")},
                            "TESTING": True, "MAIDER_TIMINGS": FAST_TIMINGS,
                            "MAIDER_PROVIDER_FACTORY": app.config["MAIDER_PROVIDER_FACTORY"]})
    with restarted.app_context():  # the lease of the killed process expires
        db.session.execute(db.update(Session).values(lease_token=None, lease_expires_at=None))
        db.session.commit()
    ready = drive(restarted, "resume", in_state(*FINAL))
    assert ready.status == "ready", ready.status_message
    assert api.count("POST", INSTANCES, status=200) == 1 and len(api.instances) == 1
    runtime(restarted).close()


def test_down_while_launching_destroys_the_vm_being_made(app, linode_world):
    api = linode_world["api"]
    launch(app, "early-down", linode_world["workdir"])
    drive(app, "early-down", in_state(SessionState.BOOTING, SessionState.CONFIGURING))
    with app.app_context():
        sessions_service.request_destroy("early-down", actor="tester")
    gone = drive(app, "early-down", in_state(SessionState.DESTROYED, SessionState.FAILED))
    assert gone.status == "destroyed" and not api.instances
    assert api.count("POST", INSTANCES, status=200) == 1


def test_down_with_the_api_unreachable_keeps_the_session_pending_then_finishes(app, linode_world):
    api = linode_world["api"]
    launch(app, "pending", linode_world["workdir"])
    ready = drive(app, "pending", in_state(*FINAL))
    assert ready.status == "ready", ready.status_message
    api.fail("DELETE", INSTANCES + "/", 503, times=6)
    with app.app_context():
        sessions_service.request_destroy("pending")
    pending = drive(app, "pending", lambda s: s.destroy_attempts >= 1)
    assert pending.status == "destroying" and pending.destroyed_at is None
    assert "destroy pending" in (pending.stage_detail or "")
    assert len(api.instances) == 1
    gone = drive(app, "pending", in_state(SessionState.DESTROYED))
    assert gone.destroyed_at is not None and not api.instances


def test_tunnel_dropped_while_ready_reconnects_on_the_same_ports(app, linode_world):
    launch(app, "drop", linode_world["workdir"])
    ready = drive(app, "drop", in_state(*FINAL))
    assert ready.status == "ready", ready.status_message
    engine = runtime(app)
    engine.drop_remote(ready.uid)  # the shared SSH transport dies (network change, laptop sleep)
    import time

    import httpx
    deadline = time.monotonic() + 15
    while True:
        status = engine.tunnels.status(ready.uid)
        try:
            if status.state == "up" and httpx.get(f"http://127.0.0.1:{ready.api_port}/health",
                                                  timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"tunnel did not come back: {status}"
        time.sleep(0.1)
    assert engine.tunnels.status(ready.uid).ports == {"api": ready.api_port, "webui": ready.webui_port}

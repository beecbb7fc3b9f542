"""The Linode path end to end: the real linode_api4 SDK against a fake Linode API, and a simulated VM configured by
the very cloud-config maider sent, reached over real SSH with the host key maider generated and pinned."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.engine.identity import load_identity
from app.extensions import db
from app.models import Session, SessionState
from app.services import sessions as sessions_service
from engine_helpers import drive, in_state, launch


def test_launch_to_ready_then_destroy_with_one_create_and_one_delete(app, linode_world):
    api, workdir = linode_world["api"], linode_world["workdir"]
    name = launch(app, "e2e", workdir)
    ready = drive(app, name, in_state(SessionState.READY, SessionState.FAILED))
    assert ready.status == "ready", ready.status_message
    assert ready.instance_id is not None and ready.api_port and ready.webui_port
    assert ready.hourly_price == pytest.approx(0.52)

    with app.app_context():
        key = load_identity(Path(app.config["MAIDER_HOME"]), ready.uid).api_key
    models = httpx.get(f"http://127.0.0.1:{ready.api_port}/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert models.status_code == 200
    assert [m["id"] for m in models.json()["data"]] == ["coder"]
    assert httpx.get(f"http://127.0.0.1:{ready.api_port}/v1/models").status_code == 401

    env_file = (workdir / ".aider-env").read_text()
    assert f"OPENAI_API_BASE='http://127.0.0.1:{ready.api_port}/v1'" in env_file
    assert (workdir / ".aider-env").stat().st_mode & 0o777 == 0o600

    with app.app_context():
        sessions_service.request_destroy(name, actor="tester")
    gone = drive(app, name, in_state(SessionState.DESTROYED))
    assert gone.destroyed_at is not None
    assert api.count("POST", "/v4/linode/instances") == 1
    assert api.count("DELETE", f"/v4/linode/instances/{gone.instance_id}") == 1
    assert not api.instances
    with app.app_context():
        kinds = [e.message for e in db.session.get(Session, gone.id).events if e.kind == "state"]
    assert kinds[0].startswith("Requested → Creating VM") and kinds[-1].startswith("Destroying → Destroyed")
    assert "Rebooting" in " ".join(kinds)  # the fresh VM needed a reboot for its driver


def test_launch_without_a_plan_takes_the_cheapest_that_fits(app, linode_world):
    workdir = linode_world["workdir"]
    (workdir / ".env").write_text("REGION=us-ord\nMODEL_ID=Qwen/Qwen2.5-Coder-32B-Instruct-AWQ\n"
                                  "VLLM_MAX_MODEL_LEN=32768\n")
    launch(app, "auto-plan", workdir)
    with app.app_context():
        session = sessions_service.get_session("auto-plan")
        assert session.plan == "g2-gpu-rtx4000a2-s" and session.gpus == 2  # one 20 GB GPU is too small at 32K
        assert session.vllm_config["tensor_parallel_size"] == 2
        assert session.hourly_price == pytest.approx(1.05)


def test_an_image_that_already_runs_the_driver_needs_no_reboot_and_says_why_it_was_fast(app, linode_world):
    from app.simulator.vm import VmBehaviour

    linode_world["behaviour"]["value"] = VmBehaviour.fast(image_driver="580.95.05", needs_reboot=False)
    name = launch(app, "ai-image", linode_world["workdir"])
    ready = drive(app, name, in_state(SessionState.READY, SessionState.FAILED))
    assert ready.status == "ready", ready.status_message
    with app.app_context():
        events = db.session.get(Session, ready.id).events
    assert "Rebooting" not in " ".join(e.message for e in events if e.kind == "state")
    assert any("already runs NVIDIA driver 580.95.05" in e.message for e in events if e.kind == "note")

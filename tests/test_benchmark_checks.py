"""GPU checks: verdicts from what nvidia-smi, vLLM and its log report; the API against simulated VMs."""
from __future__ import annotations

import re
import time

import pytest

from app.check_models import CheckRun
from app.engine import check_runner
from app.domain import gpu_checks as v
from app.models import Event, SessionState
from app.extensions import db
from app.simulator.vm import VmBehaviour
from engine_helpers import csrf_token, drive, in_state, launch, wait_for
from test_cli_demo_journey import demo_server, maider  # noqa: F401  (the fixture)

TOKEN = "api-token-for-check-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _row(index: int, used: int, total: int = 20475, busy: int = 0) -> dict:
    return {"index": index, "name": "NVIDIA RTX 4000 Ada Generation", "memory_total_mb": total,
            "memory_used_mb": used, "utilization": busy, "temperature": 40}


def test_a_missing_gpu_is_named_by_index():
    result = v.gpus_visible(4, [_row(0, 1), _row(1, 1), _row(3, 1)])
    assert not result.ok and "GPU 2 not visible" in result.message and "3 of the plan's 4" in result.message
    assert v.gpus_visible(2, [_row(0, 1), _row(1, 1)]).ok
    failed = v.gpus_visible(1, [], "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver")
    assert not failed.ok and "reboot" in failed.fix


def test_tensor_parallel_ranks_must_hold_equal_memory():
    assert v.memory_balanced([_row(0, 18000), _row(1, 17900)], 2).ok
    unbalanced = v.memory_balanced([_row(0, 18000), _row(1, 2000)], 2)
    assert not unbalanced.ok and "differ by 78%" in unbalanced.message and "GPU 1 2" in unbalanced.message
    assert "force-recreate" in unbalanced.fix
    assert v.memory_balanced([_row(0, 18000), _row(1, 2000)], 1).ok  # one rank: GPU 1 is not used


def test_log_scan_matches_vllm_texts_not_loose_words():
    assert v.log_warnings("INFO plenty of room for the KV cache; OOM-safe").ok
    found = v.log_warnings("worker 1: NCCL error in: ../nccl.cpp unhandled system error\n")
    assert not found.ok and "NCCL_P2P_DISABLE=1" in found.fix


def test_perf_verdicts():
    assert not v.utilization_under_load([0, 3, 12]).ok and v.utilization_under_load([0, 97]).ok
    assert not v.memory_headroom([_row(0, 20400)]).ok and v.memory_headroom([_row(0, 18000)]).ok
    assert v.latency_by_prompt_length({128: 90.0, 1024: 380.0, 4096: 1400.0}).ok
    assert not v.latency_by_prompt_length({128: 20.0, 4096: 1400.0}).ok
    assert not v.latency_by_prompt_length({128: 90.0}, failures=2).ok


@pytest.fixture
def api(app):
    app.config["MAIDER_API_TOKEN"] = TOKEN
    return app.test_client()


def _verdict(app, api, started) -> dict:
    """The check's final state, once its thread is done (the start answered 202 at once)."""
    assert started.status_code == 202, started.get_json()
    check_runner.wait_for(app, started.get_json()["id"], timeout_s=60)
    return api.get(f"/api/v1/checks/{started.get_json()['id']}", headers=AUTH).get_json()


def test_check_passes_on_a_healthy_session_and_is_recorded(app, api, linode_world):
    name = launch(app, "chk", linode_world["workdir"])
    drive(app, name, in_state(SessionState.READY))
    report = _verdict(app, api, api.post(f"/api/v1/sessions/{name}/check", headers=AUTH))
    assert report["status"] == "done" and report["ok"] is True, report
    assert [c["name"] for c in report["checks"]] == ["GPUs visible", "memory balanced", "completion"]
    with app.app_context():
        event = db.session.scalar(db.select(Event).where(Event.kind == "check"))
        assert "all 3 checks passed" in event.message


def test_check_names_the_hidden_gpu(app, api, linode_world):
    linode_world["behaviour"]["value"] = VmBehaviour.fast(hidden_gpus=1)
    name = launch(app, "chk-hidden", linode_world["workdir"])
    drive(app, name, in_state(SessionState.READY))
    report = _verdict(app, api, api.post(f"/api/v1/sessions/{name}/check", headers=AUTH))
    assert report["ok"] is False
    assert "GPU 0 not visible" in report["checks"][0]["message"]


def test_checks_need_a_ready_session(app, api, linode_world):
    name = launch(app, "chk-early", linode_world["workdir"])
    response = api.post(f"/api/v1/sessions/{name}/check", headers=AUTH)
    assert response.status_code == 422 and "ready session" in response.get_json()["error"]
    assert api.post("/api/v1/sessions/nope/validate-perf", headers=AUTH).status_code == 404
    assert api.get("/api/v1/checks/999", headers=AUTH).status_code == 404


@pytest.fixture
def slow_ready(app, linode_world):
    """A ready session whose fake vLLM streams slowly: validate-perf takes seconds, long enough to watch."""
    linode_world["behaviour"]["value"] = VmBehaviour.fast(itl_s=0.03)
    name = launch(app, "perf", linode_world["workdir"])
    drive(app, name, in_state(SessionState.READY))
    return name


def test_validate_perf_answers_at_once_shows_its_steps_refuses_a_second_and_ends_with_a_verdict(app, api, slow_ready):
    began = time.monotonic()
    started = api.post(f"/api/v1/sessions/{slow_ready}/validate-perf", headers=AUTH)
    assert started.status_code == 202 and time.monotonic() - began < 2.0
    assert started.get_json()["status"] in ("queued", "running") and started.get_json()["ok"] is None
    check_id = started.get_json()["id"]

    def step() -> str:
        return api.get(f"/api/v1/checks/{check_id}", headers=AUTH).get_json()["step"]
    assert wait_for(lambda: "(2 of 3)" in step(), timeout=30)

    second = api.post(f"/api/v1/sessions/{slow_ready}/check", headers=AUTH)
    assert second.status_code == 409
    assert f"validate-perf #{check_id} is already running on '{slow_ready}'" in second.get_json()["error"]

    report = _verdict(app, api, started)
    assert report["status"] == "done" and report["ok"] is True, report
    assert [c["name"] for c in report["checks"]] == ["utilization", "memory headroom", "vLLM log",
                                                     "latency"]
    again = api.post(f"/api/v1/sessions/{slow_ready}/check", headers=AUTH)  # free again once it ended
    assert _verdict(app, api, again)["ok"] is True


def test_cancel_stops_validate_perf_within_seconds(app, api, slow_ready):
    check_id = api.post(f"/api/v1/sessions/{slow_ready}/validate-perf", headers=AUTH).get_json()["id"]
    assert wait_for(lambda: "load at" in api.get(f"/api/v1/checks/{check_id}", headers=AUTH).get_json()["step"],
                    timeout=30)
    asked = time.monotonic()
    assert api.post(f"/api/v1/checks/{check_id}/cancel", headers=AUTH).status_code == 200
    check_runner.wait_for(app, check_id, timeout_s=30)
    assert time.monotonic() - asked < 5.0
    report = api.get(f"/api/v1/checks/{check_id}", headers=AUTH).get_json()
    assert report["status"] == "cancelled" and report["ok"] is None
    ended = api.post(f"/api/v1/checks/{check_id}/cancel", headers=AUTH)
    assert ended.status_code == 422 and "already ended" in ended.get_json()["error"]


def test_a_check_left_running_by_a_stopped_server_reads_as_failed(app, api, linode_world):
    with app.app_context():
        db.session.add(CheckRun(kind="check", status="running", session_name="gone", results=[]))
        db.session.commit()
    report = api.get("/api/v1/checks/1", headers=AUTH).get_json()
    assert report["status"] == "failed" and "stopped" in report["error"]


@pytest.mark.slow
def test_maider_check_and_validate_perf_on_demo_sessions(demo_server):  # noqa: F811
    up = maider(demo_server, "up", "healthy")
    assert up.returncode == 0, up.stdout + up.stderr
    check = maider(demo_server, "check", "healthy")
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("✓") == 3 and "passed all 3 checks" in check.stdout
    perf = maider(demo_server, "validate-perf", "healthy", timeout=180)
    assert perf.returncode == 0, perf.stdout + perf.stderr
    assert "utilization" in perf.stdout and "TTFT by prompt length" in perf.stdout
    assert "... load at a 128-token prompt (1 of 3)" in perf.stderr  # the step in progress while it ran

    up = maider(demo_server, "up", "lost-gpu", "--plan", "g2-gpu-rtx4000a2-s",
                "--model", "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ-demo-hide-gpu")
    assert up.returncode == 0, up.stdout + up.stderr
    lost = maider(demo_server, "check", "lost-gpu")
    assert lost.returncode == 1, lost.stdout + lost.stderr
    assert "✗ GPUs visible: GPU 1 not visible" in lost.stdout and "fix:" in lost.stdout


def test_the_session_page_buttons_start_a_check_and_the_live_channel_brings_the_verdict(app, client, linode_world):
    linode_world["behaviour"]["value"] = VmBehaviour.fast(hidden_gpus=1)
    name = launch(app, "chk-page", linode_world["workdir"])
    session = drive(app, name, in_state(SessionState.READY))
    page = client.get(f"/sessions/{name}").get_data(as_text=True)
    assert 'id="session-check"' in page and 'id="session-validate-perf"' in page
    live_version = re.search(r'data-live-version="([^"]+)"', page).group(1)
    token = csrf_token(client, f"/sessions/{name}")
    started = client.post(f"/sessions/{name}/check?uid={session.uid}",
                          headers={"X-CSRFToken": token, "HX-Request": "true"})
    body = started.get_data(as_text=True)
    assert started.status_code == 200 and 'id="session-check-report"' in body and "X-Live-Part" in started.headers
    check_id = db_check_id(app)
    check_runner.wait_for(app, check_id, timeout_s=30)
    live = client.get(f"/sessions/{name}/live?uid={session.uid}&v={live_version}")
    verdict = live.get_data(as_text=True)
    assert live.status_code == 200 and 'id="session-checks"' in verdict and 'hx-swap-oob="true"' in verdict
    assert 'data-ok="false"' in verdict and "GPU 0 not visible" in verdict and "Fix:" in verdict
    shown = live.headers["X-Live-Version"]
    assert client.get(f"/sessions/{name}/live?uid={session.uid}&v={shown}").status_code == 204


def db_check_id(app) -> int:
    with app.app_context():
        return db.session.scalar(db.select(CheckRun.id).order_by(CheckRun.id.desc()))

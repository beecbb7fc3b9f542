"""Benchmarks through the JSON API against a ready session (real SSH tunnel to the simulated VM's fake vLLM)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from app.benchmark_models import BenchmarkLevel, BenchmarkRun
from app.engine import benchmark_runner
from app.engine.identity import load_identity
from app.extensions import db
from app.models import SessionState
from engine_helpers import drive, in_state, launch, wait_for

TOKEN = "api-token-for-benchmark-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
VLLM_KEYS = {"completed", "failed", "duration", "total_input_tokens", "total_output_tokens", "request_throughput",
             "output_throughput", "total_token_throughput", "max_concurrency", "request_rate", "request_goodput",
             "input_lens", "output_lens", "ttfts", "itls", "errors", "date", "num_prompts", "model_id",
             *(f"{stat}_{metric}_ms" for stat in ("mean", "median", "std", "p99") for metric in
               ("ttft", "tpot", "itl", "e2el"))}
MAIDER_KEYS = {"model_id", "plan", "region", "gpu", "hourly_price", "cost_per_1m_output_tokens",
               "cost_per_1m_total_tokens", "max_model_len", "vllm_version", "where"}


@pytest.fixture
def ready(app, linode_world):
    app.config["MAIDER_API_TOKEN"] = TOKEN
    session = drive(app, launch(app, "bench", linode_world["workdir"]), in_state(SessionState.READY,
                                                                                 SessionState.FAILED))
    assert session.status == "ready", session.status_message
    return session


def _finished(app, api, run_id: int, timeout: float = 30.0) -> dict:
    benchmark_runner.wait_for(app, run_id, timeout)
    return api.get(f"/api/v1/benchmarks/{run_id}", headers=AUTH).get_json()


def test_a_run_stores_each_level_and_exports_vllm_keys_json_and_csv(app, ready):
    api = app.test_client()
    started = api.post("/api/v1/benchmarks", headers=AUTH, json={
        "session": "bench", "concurrency": "1,2", "num_prompts": 4, "input_len": 16, "output_len": 8,
        "goodput": "ttft:5000"})
    assert started.status_code == 202, started.get_json()
    run = _finished(app, api, started.get_json()["id"])
    assert run["status"] == "done", run["error"]
    assert run["vllm_version"] == "0.11.0" and run["plan"] == "g2-gpu-rtx4000a1-s"

    results = api.get(f"/api/v1/benchmarks/{run['id']}/results.json", headers=AUTH).get_json()
    assert [r["max_concurrency"] for r in results] == [1, 2]
    for level in results:
        assert VLLM_KEYS | MAIDER_KEYS <= set(level)
        assert level["completed"] == 4 and level["total_output_tokens"] == 32  # usage: 8 tokens each
        assert level["request_rate"] == "inf" and level["where"] == "tunnel"
        assert level["hourly_price"] == pytest.approx(0.52) and level["cost_per_1m_output_tokens"] > 0
        assert level["request_goodput"] > 0 and len(level["ttfts"]) == 4 and len(level["itls"][0]) == 7

    table = list(csv.DictReader(io.StringIO(api.get(f"/api/v1/benchmarks/{run['id']}/results.csv",
                                                    headers=AUTH).get_data(as_text=True))))
    assert [row["max_concurrency"] for row in table] == ["1", "2"]
    assert "ttfts" not in table[0] and float(table[1]["output_throughput"]) > 0

    with app.app_context():
        levels = db.session.scalars(db.select(BenchmarkLevel).order_by(BenchmarkLevel.position)).all()
        assert [lv.results["completed"] for lv in levels] == [4, 4]
        assert len(levels[0].requests["ttfts"]) == 4
    listed = api.get("/api/v1/benchmarks", headers=AUTH).get_json()["runs"]
    assert [r["id"] for r in listed] == [run["id"]]


def test_cancel_stops_a_run_and_keeps_finished_levels(app, ready):
    api = app.test_client()
    run_id = api.post("/api/v1/benchmarks", headers=AUTH, json={
        "session": "bench", "concurrency": "4,1", "num_prompts": 4, "input_len": 8, "output_len": 400}).get_json()["id"]

    def second_level_started():
        progress = api.get(f"/api/v1/benchmarks/{run_id}", headers=AUTH).get_json()["progress"]
        return progress.get("level") == 1
    wait_for(second_level_started, timeout=30)
    cancelled = api.post(f"/api/v1/benchmarks/{run_id}/cancel", headers=AUTH)
    assert cancelled.status_code == 200
    run = _finished(app, api, run_id)
    assert run["status"] == "cancelled"
    assert [lv["max_concurrency"] for lv in run["levels"]] == [4]
    again = api.post(f"/api/v1/benchmarks/{run_id}/cancel", headers=AUTH)
    assert again.status_code == 422 and "already ended" in again.get_json()["error"]


def test_another_server_by_url_keeps_its_key_out_of_the_database(app, ready):
    api = app.test_client()
    with app.app_context():
        key = load_identity(Path(app.config["MAIDER_HOME"]), ready.uid).api_key
    run_id = api.post("/api/v1/benchmarks", headers=AUTH, json={
        "base_url": f"http://127.0.0.1:{ready.api_port}/v1", "model": "coder", "api_key": key,
        "concurrency": "2", "num_prompts": 2, "input_len": 8, "output_len": 4}).get_json()["id"]
    run = _finished(app, api, run_id)
    assert run["status"] == "done" and run["base_url"] == f"http://127.0.0.1:{ready.api_port}"
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    database = Path(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert key.encode() not in stored


def test_a_wrong_key_fails_the_run_with_the_reason(app, ready):
    api = app.test_client()
    run_id = api.post("/api/v1/benchmarks", headers=AUTH, json={
        "base_url": f"http://127.0.0.1:{ready.api_port}", "model": "coder", "api_key": "sk-wrong",
        "num_prompts": 1, "input_len": 4, "output_len": 2}).get_json()["id"]
    run = _finished(app, api, run_id)
    assert run["status"] == "failed" and "HTTP 401" in run["error"] and "sk-wrong" not in run["error"]


@pytest.mark.parametrize("body, status, field", [
    ({"session": "bench", "concurrency": "1,a"}, 400, "concurrency"),  # malformed: 400
    ({"session": "bench", "num_prompts": 0}, 400, "num_prompts"),
    ({"session": "bench", "output_len": "lots"}, 400, "output_len"),
    ({"session": "bench", "goodput": "speed:3"}, 400, "goodput"),
    ({"session": "bench", "request_rate": "-2"}, 400, "request_rate"),
    ({"session": "bench", "dataset": "relative.json"}, 400, "dataset"),
    ({"base_url": "ftp://x", "model": "m"}, 400, "base_url"),
    ({"session": "bench", "bogus": 1}, 400, "bogus"),
    ({"session": "bench", "concurrency": "0"}, 422, "concurrency"),  # well-formed, refused by the rules: 422
    ({"session": "bench", "concurrency": "1,2,3,4,5,6,7,8,9,10,11,12", "request_rate": "1,2"}, 422, "concurrency"),
    ({"session": "bench", "dataset": "/nonexistent/sharegpt.json"}, 422, "dataset"),
    ({"session": "bench", "input_len": 9000}, 422, "input_len"),  # beyond the session's 8192-token context
    ({"session": "bench", "base_url": "http://127.0.0.1:9", "model": "m"}, 422, "session"),
    ({"base_url": "http://127.0.0.1:9"}, 422, "model"),
    ({}, 422, "session"),
])
def test_bad_requests_name_the_field(app, ready, body, status, field):
    response = app.test_client().post("/api/v1/benchmarks", headers=AUTH, json=body)
    assert response.status_code == status, response.get_json()
    assert field in response.get_json()["fields"]


def test_missing_things_are_404_and_a_non_object_body_400(app, ready):
    api = app.test_client()
    assert api.post("/api/v1/benchmarks", headers=AUTH, json={"session": "nope"}).status_code == 404
    assert api.get("/api/v1/benchmarks/999", headers=AUTH).status_code == 404
    assert api.post("/api/v1/benchmarks/999/cancel", headers=AUTH).status_code == 404
    assert api.post("/api/v1/benchmarks", headers=AUTH, json=[1]).status_code == 400
    assert api.get("/api/v1/benchmarks", headers={}).status_code == 401


def test_a_run_left_running_by_a_stopped_server_reads_as_failed(app, ready):
    with app.app_context():
        db.session.add(BenchmarkRun(status="running", settings={}, progress={}))
        db.session.commit()
    run = app.test_client().get("/api/v1/benchmarks/1", headers=AUTH).get_json()
    assert run["status"] == "failed" and "stopped" in run["error"]


def test_on_the_vm_the_same_client_runs_inside_the_vllm_container(app, ready, client):
    api = app.test_client()
    started = api.post("/api/v1/benchmarks", headers=AUTH, json={
        "session": "bench", "where": "vm", "concurrency": "1,2", "num_prompts": 3, "input_len": 16,
        "output_len": 8})
    assert started.status_code == 202, started.get_json()
    run = _finished(app, api, started.get_json()["id"], timeout=60)
    assert run["status"] == "done", run["error"]
    assert run["where"] == "vm" and [lv["max_concurrency"] for lv in run["levels"]] == [1, 2]
    assert all(lv["completed"] == 3 and lv["total_output_tokens"] == 24 and lv["where"] == "vm"
               for lv in run["levels"])
    tunnel = api.post("/api/v1/benchmarks", headers=AUTH, json={
        "session": "bench", "concurrency": "1", "num_prompts": 2, "input_len": 16, "output_len": 8}).get_json()
    _finished(app, api, tunnel["id"])
    page = client.get(f"/benchmarks/{tunnel['id']}").get_data(as_text=True)
    assert "Also measured on the VM itself" in page and f"runs={run['id']}" in page


def test_on_the_vm_is_for_sessions_only(app, ready):
    response = app.test_client().post("/api/v1/benchmarks", headers=AUTH, json={
        "base_url": "http://127.0.0.1:9", "model": "m", "where": "vm"})
    assert response.status_code == 422 and "where" in response.get_json()["fields"]


def test_the_runs_list_also_marks_orphaned_runs_failed(app, ready):
    with app.app_context():
        db.session.add(BenchmarkRun(status="queued", settings={}, progress={}))
        db.session.commit()
    runs = app.test_client().get("/api/v1/benchmarks", headers=AUTH).get_json()["runs"]
    assert runs[0]["status"] == "failed"


def test_a_request_rate_alone_sends_poisson_arrivals_without_a_concurrency_limit(app, ready):
    api = app.test_client()
    run_id = api.post("/api/v1/benchmarks", headers=AUTH, json={
        "session": "bench", "request_rate": "40", "num_prompts": 4, "input_len": 8, "output_len": 4}).get_json()["id"]
    run = _finished(app, api, run_id)
    assert run["status"] == "done", run["error"]
    assert [(lv["max_concurrency"], lv["request_rate"]) for lv in run["levels"]] == [(None, 40.0)]
    starts = api.get(f"/api/v1/benchmarks/{run_id}/results.json", headers=AUTH).get_json()[0]["start_times"]
    assert starts == sorted(starts) and starts[-1] > starts[0]  # spread out, not all at t=0


def test_a_sharegpt_file_supplies_prompts_and_reply_lengths(app, ready, tmp_path):
    dataset = tmp_path / "sharegpt.json"
    dataset.write_text('[{"conversations": [{"from": "human", "value": "' + "explain this code " * 8 + '"},'
                       ' {"from": "gpt", "value": "' + "word " * 12 + '"}]}]')
    api = app.test_client()
    run_id = api.post("/api/v1/benchmarks", headers=AUTH, json={
        "session": "bench", "concurrency": "2", "num_prompts": 3, "dataset": str(dataset)}).get_json()["id"]
    run = _finished(app, api, run_id)
    assert run["status"] == "done", run["error"]
    level = run["levels"][0]
    assert level["completed"] == 3 and level["dataset"] == str(dataset)
    assert level["total_input_tokens"] == 3 * len("explain this code " * 8) // 4
    assert level["total_output_tokens"] == 3 * 15  # each reply's length (60 characters), not the 128 default


def test_runs_started_through_the_api_are_the_owners(app, ready):
    api = app.test_client()
    run_id = api.post("/api/v1/benchmarks", headers={**AUTH, "X-Maider-Actor": "mallory"}, json={
        "session": "bench", "concurrency": "1", "num_prompts": 1, "input_len": 4, "output_len": 2}).get_json()["id"]
    run = _finished(app, api, run_id)
    assert run["created_by"].endswith("(cli)") and "mallory" not in run["created_by"]

"""``--on-vm`` benchmarks stream their progress back over SSH, and a cancel stops the program on the (simulated) VM.

The simulated VM runs the very program a real VM gets (the client's sources on one line of stdin, stdin left open),
under this machine's Python, against its fake vLLM; the laptop reads its lines through real paramiko SSH.
"""
from __future__ import annotations

import re
import time

import pytest

from app.engine import benchmark_runner
from app.models import SessionState
from app.simulator.vm import VmBehaviour
from engine_helpers import drive, in_state, launch, wait_for

TOKEN = "api-token-for-on-vm-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def slow_vm(app, linode_world):
    """A ready session whose fake vLLM takes 20 ms per token: a request of 50 tokens lasts a second."""
    app.config["MAIDER_API_TOKEN"] = TOKEN
    linode_world["behaviour"]["value"] = VmBehaviour.fast(itl_s=0.02)
    session = drive(app, launch(app, "onvm", linode_world["workdir"]), in_state(SessionState.READY,
                                                                                SessionState.FAILED))
    assert session.status == "ready", session.status_message
    return linode_world["vms"][0]


def _run(api, run_id: int) -> dict:
    return api.get(f"/api/v1/benchmarks/{run_id}", headers=AUTH).get_json()


def test_an_on_vm_run_shows_progress_and_stores_each_level_while_it_runs(app, slow_vm, client):
    api = app.test_client()
    started = api.post("/api/v1/benchmarks", headers=AUTH, json={
        "session": "onvm", "where": "vm", "concurrency": "1,2", "num_prompts": 4, "input_len": 16,
        "output_len": 50, "warmup": 0})
    assert started.status_code == 202, started.get_json()
    run_id = started.get_json()["id"]

    def mid_first_level():
        run = _run(api, run_id)
        progress = run["progress"]
        return (run["status"] == "running" and progress.get("level") == 0 and 0 < progress["done"] < 4
                and progress["total"] == 4 and progress["output_tokens_per_s"] > 0 and run)
    seen = wait_for(mid_first_level, timeout=30)
    assert seen["levels"] == []  # nothing finished yet, and the bar already moves
    partial = client.get(f"/benchmarks/{run_id}/progress").get_data(as_text=True)  # the panel's run page
    assert "Inside the VM's vLLM container · Level 1 of 2" in partial
    assert int(re.search(r'aria-label="Requests done" max="4" value="(\d+)"', partial).group(1)) >= 1

    def first_level_stored():
        run = _run(api, run_id)
        return run["status"] == "running" and len(run["levels"]) == 1 and run
    stored = wait_for(first_level_stored, timeout=30)
    assert stored["levels"][0]["completed"] == 4 and stored["levels"][0]["where"] == "vm"

    benchmark_runner.wait_for(app, run_id, 30)
    run = _run(api, run_id)
    assert run["status"] == "done", run["error"]
    assert [lv["max_concurrency"] for lv in run["levels"]] == [1, 2]
    assert all(lv["completed"] == 4 and lv["total_output_tokens"] == 200 for lv in run["levels"])


def test_cancel_stops_an_on_vm_run_within_seconds_and_keeps_finished_levels(app, slow_vm):
    api = app.test_client()
    run_id = api.post("/api/v1/benchmarks", headers=AUTH, json={
        "session": "onvm", "where": "vm", "concurrency": "4,1", "num_prompts": 4, "input_len": 16,
        "output_len": 200, "warmup": 0}).get_json()["id"]
    # The first level is stored and the second (concurrency 1) has its first 4-second request streaming on the VM.
    assert wait_for(lambda: len(_run(api, run_id)["levels"]) == 1 and slow_vm.vllm.counters.running == 1,
                    timeout=30)

    asked = time.monotonic()
    assert api.post(f"/api/v1/benchmarks/{run_id}/cancel", headers=AUTH).status_code == 200
    benchmark_runner.wait_for(app, run_id, 30)
    assert time.monotonic() - asked < 3.0  # the channel closes within a read slice
    run = _run(api, run_id)
    assert run["status"] == "cancelled"
    assert [lv["max_concurrency"] for lv in run["levels"]] == [4]
    # The program on the VM stopped too: its request (4 s long) is cut at once instead of running to its end.
    assert wait_for(lambda: slow_vm.vllm.counters.running == 0, timeout=2.0)

"""The Benchmarks pages: run form, progress, run page with chart data, compare, exports and cancel."""
from __future__ import annotations

import json

import pytest

from app.engine import benchmark_runner
from app.models import SessionState
from engine_helpers import csrf_token, drive, in_state, launch, wait_for

SMALL = {"concurrency": "1,2", "num_prompts": "3", "input_len": "16", "output_len": "8"}


@pytest.fixture
def ready(app, linode_world):
    session = drive(app, launch(app, "web-bench", linode_world["workdir"]),
                    in_state(SessionState.READY, SessionState.FAILED))
    assert session.status == "ready", session.status_message
    return session


def _start(app, client, **fields) -> int:
    form = {"csrf_token": csrf_token(client, "/benchmarks/"), "session": "web-bench", **SMALL, **fields}
    response = client.post("/benchmarks/", data=form)
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    run_id = int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    return run_id


def _finish(app, run_id: int) -> None:
    benchmark_runner.wait_for(app, run_id, 30)


def test_the_form_lists_ready_sessions_and_explains_tpot(client, ready):
    page = client.get("/benchmarks/").get_data(as_text=True)
    assert 'value="web-bench"' in page and "Run benchmark" in page
    assert "No runs yet" in page


def test_bad_fields_come_back_beside_the_field_and_start_nothing(client, ready):
    form = {"csrf_token": csrf_token(client, "/benchmarks/"), "session": "web-bench", **SMALL,
            "concurrency": "1,x", "goodput": "fast"}
    response = client.post("/benchmarks/", data=form)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "takes whole numbers separated by commas" in page and "goodput takes" in page
    assert 'value="1,x"' in page  # the user's input stays
    assert "No runs yet" in page


def test_a_run_shows_results_charts_data_and_downloads(app, client, ready):
    run_id = _start(app, client)
    _finish(app, run_id)
    page = client.get(f"/benchmarks/{run_id}").get_data(as_text=True)
    assert ">done<" in page and 'data-chart-src="/benchmarks/' in page and "TPOT excludes the first token" in page
    data = client.get(f"/benchmarks/{run_id}/chart-data").get_json()["runs"][0]
    assert data["x"] == [1, 2] and all(v > 0 for v in data["output_throughput"])
    assert data["x_label"] == "concurrency" and len(data["p99_ttft_ms"]) == 2

    download = client.get(f"/benchmarks/{run_id}/results.json")
    assert "attachment" in download.headers["Content-Disposition"]
    levels = json.loads(download.get_data(as_text=True))
    assert [lv["max_concurrency"] for lv in levels] == [1, 2] and len(levels[0]["ttfts"]) == 3
    csv_text = client.get(f"/benchmarks/{run_id}/results.csv").get_data(as_text=True)
    assert csv_text.splitlines()[0].startswith("date,") and len(csv_text.splitlines()) == 3


def test_compare_overlays_two_to_four_runs(app, client, ready):
    first = _start(app, client)
    _finish(app, first)
    second = _start(app, client, concurrency="2,4")
    _finish(app, second)
    page = client.get(f"/benchmarks/compare?runs={first}&runs={second}")
    assert page.status_code == 200 and page.get_data(as_text=True).count("bench-results") >= 2
    data = client.get(f"/benchmarks/compare/chart-data?runs={first}&runs={second}").get_json()["runs"]
    assert [d["x"] for d in data] == [[1, 2], [2, 4]]
    alone = client.get(f"/benchmarks/compare?runs={first}")
    assert alone.status_code == 400 and "Pick 2 to 4 runs" in alone.get_data(as_text=True)
    assert client.get("/benchmarks/compare?runs=1&runs=99").status_code == 404


def test_cancel_from_the_page_keeps_finished_levels(app, client, ready):
    run_id = _start(app, client, concurrency="3,1", num_prompts="3", output_len="300")
    wait_for(lambda: benchmark_runner.active_runs(app).get(run_id)
             and benchmark_runner.active_runs(app)[run_id].level == 1, timeout=30)
    progress = client.get(f"/benchmarks/{run_id}/progress").get_data(as_text=True)
    assert "Level 2 of 2" in progress and "Cancel run" in progress
    token = csrf_token(client, f"/benchmarks/{run_id}")
    assert client.post(f"/benchmarks/{run_id}/cancel", data={"csrf_token": token}).status_code == 303
    _finish(app, run_id)
    page = client.get(f"/benchmarks/{run_id}").get_data(as_text=True)
    assert ">cancelled<" in page and page.count("<tr>") == 2  # header + the one finished level
    assert client.get(f"/benchmarks/{run_id}/progress").headers.get("HX-Refresh") == "true"


def test_unknown_runs_are_404(client, ready):
    assert client.get("/benchmarks/42").status_code == 404
    assert client.get("/benchmarks/42/results.json").status_code == 404

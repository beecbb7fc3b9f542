"""``maider benchmark`` as a user types it, against a real ``maider serve --demo`` and a demo session."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time

import httpx
import pytest

from test_cli_demo_journey import MAIDER, demo_server, maider  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


@pytest.fixture
def session(demo_server):  # noqa: F811
    up = maider(demo_server, "up", "bench1")
    assert up.returncode == 0, up.stdout + up.stderr
    return demo_server


def _api(world, path: str):
    info = world["info"]
    return httpx.get(f"{info['url']}/api/v1{path}", headers={"Authorization": f"Bearer {info['api_token']}"}).json()


def test_benchmark_prints_a_table_and_writes_json_and_csv(session):
    project = session["project"]
    run = maider(session, "benchmark", "bench1", "--concurrency", "1,4", "--num-prompts", "4", "--input-len", "32",
                 "--output-len", "16", "--goodput", "ttft:2000", "-o", "out.json")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "TTFT p50" in run.stdout and "excludes the first token" in run.stdout
    assert "4/4 requests" in run.stderr  # the progress bar reached the end
    levels = json.loads((project / "out.json").read_text())
    assert [lv["max_concurrency"] for lv in levels] == [1, 4]
    assert all(lv["completed"] == 4 and lv["total_output_tokens"] == 64 for lv in levels)
    assert {"mean_ttft_ms", "p99_itl_ms", "request_goodput", "gpu", "where", "cost_per_1m_output_tokens"} <= set(
        levels[0])

    again = maider(session, "benchmark", "--concurrency", "2", "--num-prompts", "2", "--input-len", "8",
                   "--output-len", "4", "-o", "out.csv")  # the current session ('maider up' made it current)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = list(csv.DictReader((project / "out.csv").read_text().splitlines()))
    assert len(rows) == 1 and rows[0]["max_concurrency"] == "2" and rows[0]["completed"] == "2"
    assert len(_api(session, "/benchmarks")["runs"]) == 2  # both stored by the server

    on_vm = maider(session, "benchmark", "--on-vm", "--concurrency", "2", "--num-prompts", "2", "--input-len", "8",
                   "--output-len", "4", "-o", "vm.json")
    assert on_vm.returncode == 0, on_vm.stdout + on_vm.stderr
    assert json.loads((project / "vm.json").read_text())[0]["where"] == "vm"


def test_ctrl_c_cancels_the_run_in_the_server(session):
    process = subprocess.Popen(MAIDER + ["benchmark", "bench1", "--concurrency", "1", "--num-prompts", "50",
                                         "--input-len", "8", "--output-len", "64"],
                               cwd=session["project"], env=session["env"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not _api(session, "/benchmarks")["runs"] or \
            _api(session, "/benchmarks")["runs"][0]["progress"].get("done", 0) < 1:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "cancelled" in err
    assert _api(session, "/benchmarks")["runs"][0]["status"] == "cancelled"


@pytest.mark.parametrize("args, message", [
    (["--concurrency", "1,x"], "concurrency"),
    (["--goodput", "fast"], "goodput"),
    (["-o", "out.txt"], "FILE.json or FILE.csv"),
    (["--dataset", "missing.json"], "is not a file"),
    (["nosuch"], "no session named"),
    (["--on-vm", "--base-url", "http://127.0.0.1:9", "--model", "m"], "no --on-vm"),
])
def test_bad_arguments_say_what_to_fix(session, args, message):
    name = [] if args[0] == "nosuch" else ["bench1"]
    result = maider(session, "benchmark", *name, *args)
    assert result.returncode != 0 and message in result.stdout + result.stderr, result.stdout + result.stderr

"""/api/v1/benchmarks: start, follow, cancel and export benchmark runs (the CLI's ``maider benchmark`` uses these)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Response, current_app, jsonify

from app.benchmark_models import BenchmarkRun
from app.errors import MalformedRequest
from app.services import benchmark_export
from app.services import benchmarks as benchmarks_service
from app.web import schemas
from app.web.api import bp, openapi
from app.web.api.actor import api_actor

MAX_RUN_ID = 2**31 - 1


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


def run_json(run: BenchmarkRun, with_levels: bool = True) -> dict[str, Any]:
    """A run's facts, settings, live progress and (with_levels) each level's results without per-request lists."""
    body: dict[str, Any] = {
        "id": run.id, "status": run.status, "error": run.error, "title": run.title, "session": run.session_name,
        "base_url": run.base_url, "model_id": run.model_id, "served_name": run.served_name, "plan": run.plan,
        "region": run.region, "gpu": run.gpu, "gpus": run.gpus, "hourly_price": run.hourly_price, "where": run.where,
        "vllm_version": run.vllm_version, "settings": run.settings, "created_by": run.created_by,
        "created_at": _iso(run.created_at), "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
        "progress": benchmarks_service.progress(current_app._get_current_object(), run),
    }
    if with_levels:
        body["levels"] = benchmark_export.run_json(run, with_requests=False)
    return body


_NUMBER = r"\d{1,6}(?:\.\d{1,6})?"
_SLO = rf"(?:ttft|tpot|e2el):{_NUMBER}"
BENCHMARK = schemas.Body("BenchmarkRequest", {
    "session": schemas.SESSION_NAME,
    "base_url": schemas.Text(r"https?://[^\s\x00-\x1f\x7f]{1,290}", 300, "use a URL like http://127.0.0.1:8000",
                             "http://127.0.0.1:8000", what="an http(s) URL"),
    "api_key": schemas.Text(r"[\x21-\x7e]{1,256}", 256, "use the server's API key", "sk-example",
                            what="an API key"),
    "model": schemas.SERVED_NAME,
    "concurrency": schemas.Text(r"\d{1,4}(?:,\d{1,4}){0,11}", 60, "use levels like 1,2,4,8", "1,2,4,8",
                                what="a list of concurrency levels"),
    "request_rate": schemas.Text(rf"(?:inf|{_NUMBER})(?:,(?:inf|{_NUMBER})){{0,11}}", 200,
                                 "use requests per second like 2.5 or inf", "inf", what="a list of request rates"),
    "num_prompts": schemas.Whole(1, benchmarks_service.MAX_PROMPTS, 32),
    "input_len": schemas.Whole(1, benchmarks_service.MAX_LEN, 1024),
    "output_len": schemas.Whole(1, benchmarks_service.MAX_LEN, 128),
    "dataset": schemas.Text(r"random|/[^\x00-\x1f\x7f]{0,1023}", 1024,
                            "use random or the full path of a ShareGPT JSON file", "random", what="a dataset"),
    "goodput": schemas.Text(rf"{_SLO}(?:,{_SLO}){{0,2}}", 100, "use limits in ms like ttft:500,tpot:50",
                            "ttft:500", what="a goodput limit"),
    "endpoint": schemas.Text("completions|chat", 11, "use completions or chat", "completions", what="an endpoint"),
    "where": schemas.Text("tunnel|vm", 6, "use tunnel (through this laptop) or vm (on the VM itself)", "tunnel",
                          what="a place to run from"),
    "warmup": schemas.Whole(0, benchmarks_service.MAX_WARMUP, 1),
    "seed": schemas.Whole(0, 2**31, 0),
}, descriptions={"session": "a ready session; or base_url + model (+ api_key) for another OpenAI-compatible server",
                 "dataset": "random (fixed lengths, ignore_eos) or a ShareGPT JSON file on the server's disk",
                 "where": "vm runs the client inside the VM's vLLM container: figures without the tunnel"})


def _body() -> dict[str, Any]:
    values = BENCHMARK.parse(schemas.json_body())
    return {key: value for key, value in values.items() if value is not None}


def _run_id(run_id: int) -> int:
    if run_id > MAX_RUN_ID:
        raise MalformedRequest({"run_id": "names no run"})
    return run_id


@bp.post("/benchmarks")
def create_benchmark():
    """Start a benchmark against a ready session (or base_url + model); it runs in the server."""
    parsed = benchmarks_service.parse_request(_body())
    run = benchmarks_service.start_run(current_app._get_current_object(), parsed,
                                       Path(current_app.config["MAIDER_HOME"]), api_actor())
    return jsonify(run_json(run)), 202


@bp.get("/benchmarks")
def list_benchmarks():
    """Every stored run, newest first (without per-level results)."""
    runs = benchmarks_service.list_runs(current_app._get_current_object())
    return jsonify({"runs": [run_json(r, with_levels=False) for r in runs]})


@bp.get("/benchmarks/<int:run_id>")
def get_benchmark(run_id: int):
    """One run with progress and per-level results."""
    return jsonify(run_json(benchmarks_service.get_run(current_app._get_current_object(), _run_id(run_id))))


@bp.post("/benchmarks/<int:run_id>/cancel")
def cancel_benchmark(run_id: int):
    """Stop a running benchmark; finished levels stay."""
    return jsonify(run_json(benchmarks_service.request_cancel(current_app._get_current_object(), _run_id(run_id))))


@bp.get("/benchmarks/<int:run_id>/results.json")
def benchmark_results_json(run_id: int):
    """vllm bench serve --save-result objects, one per level, with maider's keys and per-request lists."""
    run = benchmarks_service.get_run(current_app._get_current_object(), _run_id(run_id))
    return jsonify(benchmark_export.run_json(run))


@bp.get("/benchmarks/<int:run_id>/results.csv")
def benchmark_results_csv(run_id: int):
    """One CSV row per level."""
    run = benchmarks_service.get_run(current_app._get_current_object(), _run_id(run_id))
    return Response(benchmark_export.run_csv(run), mimetype="text/csv")


openapi.register(path_params={"run_id": {"type": "integer", "minimum": 0, "maximum": MAX_RUN_ID}}, schemas={
    "BenchmarkRun": {"type": "object"}, "BenchmarkRunList": {"type": "object"},
    "BenchmarkResults": {"type": "array", "items": {"type": "object"}}, "Text": {"type": "string"},
    BENCHMARK.title: BENCHMARK.schema(),
}, operations={
    "api.create_benchmark": openapi.Operation(
        "Start a benchmark (JSON body: session or base_url+model+api_key; concurrency, request_rate, num_prompts, "
        "input_len, output_len, dataset, goodput, endpoint, where, warmup, seed)", (202, "BenchmarkRun"),
        errors=(404, 413, 422), body=BENCHMARK),
    "api.list_benchmarks": openapi.Operation("Stored benchmark runs, newest first", (200, "BenchmarkRunList")),
    "api.get_benchmark": openapi.Operation("One benchmark run with progress and results", (200, "BenchmarkRun"),
                                           errors=(400,)),
    "api.cancel_benchmark": openapi.Operation("Cancel a running benchmark", (200, "BenchmarkRun"),
                                              errors=(400, 422)),
    "api.benchmark_results_json": openapi.Operation("Results as vllm bench serve --save-result objects",
                                                    (200, "BenchmarkResults"), errors=(400,)),
    "api.benchmark_results_csv": openapi.Operation("Results as CSV, one row per level", (200, "Text"),
                                                   errors=(400,)),
})

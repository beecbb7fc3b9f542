"""Benchmark pages. Routes read the database and call the benchmarks service; the run itself is a server thread."""
from __future__ import annotations

import json
from pathlib import Path

from flask import Response, current_app, jsonify, redirect, render_template, request, url_for

from app.benchmark_models import BenchmarkRun
from app.errors import FieldError, UserError
from app.models import Session, SessionState
from app.services import benchmark_export
from app.services import benchmarks as benchmarks_service
from app.services import sessions as sessions_service
from app.web.access import actor
from app.web.benchmarks import bp

FORM_FIELDS = ("session", "concurrency", "num_prompts", "input_len", "output_len", "request_rate", "goodput", "where")
FORM_DEFAULTS = {"concurrency": "1,2,4,8", "num_prompts": "16", "input_len": "256", "output_len": "64",
                 "request_rate": "", "goodput": ""}
COMPARE_MIN, COMPARE_MAX = 2, 4
PROGRESS_EVERY = "1s"


def _app():
    return current_app._get_current_object()


def _ready_sessions() -> list[Session]:
    return [s for s in sessions_service.live_sessions() if s.state == SessionState.READY]


def _index(values: dict[str, str], errors: dict[str, str], status: int = 200):
    return render_template("benchmarks/index.html", runs=benchmarks_service.list_runs(_app()),
                           sessions=_ready_sessions(), values=values, errors=errors, defaults=FORM_DEFAULTS), status


@bp.get("/")
def index():
    """Stored runs, newest first, and the form that starts one."""
    values = dict(FORM_DEFAULTS, session=request.args.get("session", ""))
    return _index(values, {})


@bp.post("/")
def start():
    """Start a run on a ready session; errors come back beside their fields."""
    values = {name: (request.form.get(name) or "").strip() for name in FORM_FIELDS}
    body = {k: v for k, v in values.items() if v}
    body.setdefault("concurrency", "")
    try:
        parsed = benchmarks_service.parse_request(body)
        run = benchmarks_service.start_run(_app(), parsed, Path(current_app.config["MAIDER_HOME"]), actor())
    except FieldError as exc:
        return _index(values, exc.fields)
    except UserError as exc:
        return _index(values, {"session": str(exc)})
    return redirect(url_for("benchmarks.detail", run_id=run.id), code=303)


def _load(run_id: int) -> BenchmarkRun:
    return benchmarks_service.get_run(_app(), run_id)


@bp.get("/<int:run_id>")
def detail(run_id: int):
    """A run: settings, live progress, charts and per-level results."""
    run = _load(run_id)
    return render_template("benchmarks/detail.html", run=run, levels=benchmark_export.run_json(run, False),
                           progress=benchmarks_service.progress(_app(), run), every=PROGRESS_EVERY,
                           other=benchmarks_service.counterpart(run))


@bp.get("/<int:run_id>/progress")
def progress(run_id: int):
    """The progress partial; once the run has ended the page reloads itself to draw the final charts."""
    run = _load(run_id)
    if run.state.is_finished():
        return "", 200, {"HX-Refresh": "true"}
    return render_template("benchmarks/_progress.html", run=run, progress=benchmarks_service.progress(_app(), run),
                           levels=benchmark_export.run_json(run, False), every=PROGRESS_EVERY)


@bp.post("/<int:run_id>/cancel")
def cancel(run_id: int):
    """Stop the run; finished levels stay."""
    benchmarks_service.request_cancel(_app(), run_id)
    return redirect(url_for("benchmarks.detail", run_id=run_id), code=303)


@bp.get("/<int:run_id>/chart-data")
def chart_data(run_id: int):
    """The charts' points, one per level."""
    return jsonify({"runs": [benchmark_export.chart_data(_load(run_id))]})


def _compare_ids() -> list[int]:
    ids = list(dict.fromkeys(request.args.getlist("runs", type=int)))
    if not COMPARE_MIN <= len(ids) <= COMPARE_MAX:
        raise UserError(f"pick {COMPARE_MIN} to {COMPARE_MAX} runs to compare (you picked {len(ids)})")
    return ids


@bp.get("/compare")
def compare():
    """2-4 runs overlaid on the same charts, with their results side by side."""
    runs = benchmarks_service.runs_by_ids(_app(), _compare_ids())
    return render_template("benchmarks/compare.html", runs=runs,
                           tables=[(run, benchmark_export.run_json(run, False)) for run in runs])


@bp.get("/compare/chart-data")
def compare_data():
    runs = benchmarks_service.runs_by_ids(_app(), _compare_ids())
    return jsonify({"runs": [benchmark_export.chart_data(run) for run in runs]})


def _download(body: str, mimetype: str, filename: str) -> Response:
    return Response(body, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@bp.get("/<int:run_id>/results.json")
def export_json(run_id: int):
    """vllm bench serve --save-result objects, one per level, plus maider's keys."""
    run = _load(run_id)
    return _download(json.dumps(benchmark_export.run_json(run), indent=2), "application/json",
                     f"maider-benchmark-{run.id}.json")


@bp.get("/<int:run_id>/results.csv")
def export_csv(run_id: int):
    """One row per level."""
    run = _load(run_id)
    return _download(benchmark_export.run_csv(run), "text/csv", f"maider-benchmark-{run.id}.csv")


@bp.post("/<int:run_id>/delete")
def delete(run_id: int):
    """Forget a finished run."""
    benchmarks_service.delete_run(_app(), run_id)
    return redirect(url_for("benchmarks.index"), code=303)


"""The session page's live charts (the monitor's samples, a bounded ring per session) and its GPU check buttons."""
from __future__ import annotations

from flask import current_app, jsonify, render_template, request

from app.services import gpu_checks as checks_service
from app.services import sessions as sessions_service
from app.web.access import actor
from app.web.sessions import bp, views

SAMPLE_FIELDS = ("t", "tokens_per_s", "running", "waiting", "kv_cache_usage", "cost")


@bp.get("/sessions/<name>/live-samples")
def live_samples(name: str):
    """Samples as columns, plus whether more will come (the page stops polling when not)."""
    uid = request.args.get("uid")
    session = views.session_by_uid(name, uid) if uid else sessions_service.get_session(name)
    samples = (session.engine_state or {}).get("samples") or []
    columns = {field: [row[i] for row in samples] for i, field in enumerate(SAMPLE_FIELDS)}
    return jsonify({**columns, "live": session.destroyed_at is None and not session.state.is_terminal()})


def _run_checks(name: str, kind: str):
    report = checks_service.run(current_app._get_current_object(), name, kind, actor())
    return render_template("sessions/_checks.html", report=report)


@bp.post("/sessions/<name>/check")
def check(name: str):
    """The quick GPU check, as a partial with one line per check."""
    return _run_checks(name, "check")


@bp.post("/sessions/<name>/validate-perf")
def validate_perf(name: str):
    """The performance check under load (about a minute), as a partial."""
    return _run_checks(name, "validate-perf")

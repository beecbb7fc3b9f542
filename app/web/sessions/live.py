"""The session page's live charts read the monitor's samples (a bounded ring per session) from here."""
from __future__ import annotations

from flask import jsonify, request

from app.services import sessions as sessions_service
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

"""JSON endpoints. Routes parse input, call one service and serialise; they never call a provider themselves."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import current_app, jsonify, request

from app.domain.server_proof import is_valid_nonce, server_proof
from app.errors import UserError
from app.services import aider as aider_service
from app.services import cleanup as cleanup_service
from app.services import sessions as sessions_service
from app.services import tunnels as tunnels_service
from app.web.api import bp
from app.web.api.serialize import event_json, orphan_json, session_json


def _home() -> Path:
    return Path(current_app.config["MAIDER_HOME"])


def _actor() -> str:
    return (request.headers.get("X-Maider-Actor") or "api")[:64]


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object")
    return body


def _int_or_none(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"{key} must be a whole number, not {value!r}") from None


@bp.get("/health")
def health():
    """Say that this is a maider server and whether it runs in demo mode; with ``?nonce=``, prove it holds the API
    token (app.domain.server_proof) so the CLI never sends the token to whatever else took a stale address."""
    answer = {"ok": True, "service": "maider", "demo": bool(current_app.config.get("MAIDER_DEMO"))}
    nonce = request.args.get("nonce")
    if nonce is not None:
        if not is_valid_nonce(nonce):
            raise UserError("nonce must be 16 to 128 characters of A-Z, a-z, 0-9, '-' or '_'")
        answer["proof"] = server_proof(str(current_app.config.get("MAIDER_API_TOKEN") or ""), nonce)
    return jsonify(answer)


@bp.get("/sessions")
def list_sessions():
    """List live sessions with cost, and the spend totals."""
    overview = sessions_service.dashboard_overview()
    return jsonify({
        "sessions": [session_json(s, overview.now) for s in overview.sessions],
        "totals": {"burn_rate": overview.burn_rate, "spent_today": overview.spent_today,
                   "spent_total": overview.spent_total},
        "orphans": [orphan_json(o) for o in overview.orphans],
        "demo": bool(current_app.config.get("MAIDER_DEMO")),
    })


@bp.post("/sessions")
def create_session():
    """Request a launch; the workers create the VM."""
    body = _body()
    launch = sessions_service.LaunchRequest(
        workdir=str(body.get("workdir") or current_app.config["MAIDER_WORKDIR"]), name=body.get("name") or None,
        actor=_actor(), region=body.get("region") or None, plan=body.get("plan") or None,
        model_id=body.get("model_id") or None, served_name=body.get("served_name") or None,
        max_model_len=_int_or_none(body, "max_model_len"),
        tensor_parallel_size=_int_or_none(body, "tensor_parallel_size"),
        keep_on_failure=bool(body.get("keep_on_failure")),
    )
    session = sessions_service.request_launch(launch, home=_home(), demo=bool(current_app.config.get("MAIDER_DEMO")))
    return jsonify(session_json(session)), 201


@bp.get("/sessions/<name>")
def get_session(name: str):
    """Show one session."""
    return jsonify(session_json(sessions_service.get_session(name)))


@bp.delete("/sessions/<name>")
def destroy_session(name: str):
    """Request destruction; the session stays until the provider confirms the VM is deleted."""
    return jsonify(session_json(sessions_service.request_destroy(name, _actor()))), 202


@bp.get("/sessions/<name>/events")
def session_events(name: str):
    """The session's events after ?after=<id>."""
    session = sessions_service.get_session(name)
    after = request.args.get("after", 0, type=int)
    return jsonify({"events": [event_json(e) for e in sessions_service.events_for(session, after)]})


@bp.post("/sessions/<name>/tunnel")
def reconnect_tunnel(name: str):
    """Re-establish the session's SSH forwards."""
    return jsonify(tunnels_service.request_reconnect(current_app._get_current_object(), name, _actor()))


@bp.post("/sessions/<name>/extend")
def extend_session(name: str):
    """Reset the idle watchdog's timer."""
    return jsonify(session_json(sessions_service.extend(name, _actor())))


@bp.post("/sessions/<name>/model")
def switch_model(name: str):
    """Switch the model on a running VM."""
    body = _body()
    model_id = str(body.get("model_id") or "").strip()
    if not model_id:
        raise UserError("model_id is required")
    session = sessions_service.switch_model(
        name, model_id, home=_home(), max_model_len=_int_or_none(body, "max_model_len"),
        tensor_parallel_size=_int_or_none(body, "tensor_parallel_size"), actor=_actor())
    return jsonify(session_json(session)), 202


@bp.get("/sessions/<name>/aider")
def aider_files(name: str):
    """The aider hand-off files' contents (with the API key), for the CLI to write into the user's project."""
    return jsonify(aider_service.handoff(sessions_service.get_session(name), _home()))


@bp.post("/cleanup")
def cleanup():
    """Forget sessions whose VMs the provider confirms gone (or one the user deleted by hand, with force)."""
    body = _body()
    result = cleanup_service.cleanup(_home(), session_name=body.get("session") or None,
                                     force=bool(body.get("force")), actor=_actor())
    return jsonify({"removed": result.removed, "kept": [{"name": n, "why": w} for n, w in result.kept]})


@bp.get("/orphans")
def list_orphans():
    """Maider-tagged VMs no session owns."""
    return jsonify({"orphans": [orphan_json(o) for o in cleanup_service.orphans()]})


@bp.post("/orphans/<int:orphan_id>/adopt")
def adopt_orphan(orphan_id: int):
    """Track an orphan VM as a session."""
    return jsonify(session_json(cleanup_service.adopt_orphan(orphan_id, _actor())))


@bp.delete("/orphans/<int:orphan_id>")
def destroy_orphan(orphan_id: int):
    """Destroy an orphan VM (tracked until the provider confirms)."""
    return jsonify(session_json(cleanup_service.destroy_orphan(orphan_id, _actor()))), 202

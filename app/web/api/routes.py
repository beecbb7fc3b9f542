"""JSON endpoints. Routes parse input, call one service and serialise; they never call a provider themselves."""
from __future__ import annotations

from pathlib import Path

from flask import current_app, jsonify, request

from app.domain.server_proof import is_valid_nonce, server_proof
from app.errors import ConflictError, FieldError, MalformedRequest, NotFoundError, UserError
from app.services import aider as aider_service
from app.services import cleanup as cleanup_service
from app.services import sessions as sessions_service
from app.services import tunnels as tunnels_service
from app.web import schemas
from app.web.api import bp, openapi
from app.web.api.actor import api_actor
from app.web.api.serialize import event_json, orphan_json, session_json

ORPHAN_ID = f"int(max={schemas.MAX_DB_ID})"  # a larger id names no row: 404, not an overflow in SQLite


def _home() -> Path:
    return Path(current_app.config["MAIDER_HOME"])


def _actor() -> str:
    return api_actor()


@bp.before_request
def _documented_query_only():
    """A query parameter the route does not read is refused, as an unknown body field is (the document lists them)."""
    operation = openapi.OPERATIONS.get(request.endpoint or "")
    unknown = [key for key in request.args if operation is not None and key not in operation.query]
    if unknown:
        raise MalformedRequest({key[:40]: "is not a parameter of this request" for key in unknown[:5]})


@bp.errorhandler(UserError)
def _user_error(error: UserError):
    """``{"error": message, "status": code}`` (with ``fields`` and the first ``field`` for field errors): 400 for a
    malformed request, 404 for a missing session, 409 for a name taken, 422 for a request maider's rules refuse."""
    status = (400 if isinstance(error, MalformedRequest) else 404 if isinstance(error, NotFoundError)
              else 409 if isinstance(error, ConflictError) else 422)
    body: dict = {"error": str(error), "status": status}
    if isinstance(error, FieldError) and error.fields:
        body["fields"] = error.fields
        body["field"] = next(iter(error.fields))
    return jsonify(body), status


@bp.get("/health")
def health():
    """Say that this is a maider server and whether it runs in demo mode; with ``?nonce=``, prove it holds the API
    token (app.domain.server_proof) so the CLI never sends the token to whatever else took a stale address."""
    answer = {"ok": True, "service": "maider", "demo": bool(current_app.config.get("MAIDER_DEMO"))}
    nonce = request.args.get("nonce")
    if nonce is not None:
        if not is_valid_nonce(nonce):
            raise MalformedRequest({"nonce": "must be 16 to 128 characters of A-Z, a-z, 0-9, '-' or '_'"})
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
    body = schemas.LAUNCH.parse(schemas.json_body())
    workdir = body.pop("workdir")
    body["keep_on_failure"] = body["keep_on_failure"] is True
    launch = sessions_service.LaunchRequest(
        **body, actor=_actor(),
        workdir=sessions_service.checked_workdir(workdir) if workdir else current_app.config["MAIDER_WORKDIR"])
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
    after = schemas.query_int("after", schemas.EVENT_ID, 0)
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
    body = schemas.SWITCH_MODEL.parse(schemas.json_body())
    session = sessions_service.switch_model(name, body["model_id"], home=_home(), max_model_len=body["max_model_len"],
                                            tensor_parallel_size=body["tensor_parallel_size"], actor=_actor())
    return jsonify(session_json(session)), 202


@bp.get("/sessions/<name>/aider")
def aider_files(name: str):
    """The aider hand-off files' contents (with the API key), for the CLI to write into the user's project."""
    return jsonify(aider_service.handoff(sessions_service.get_session(name), _home()))


@bp.post("/cleanup")
def cleanup():
    """Forget sessions whose VMs the provider confirms gone (or one the user deleted by hand, with force)."""
    body = schemas.CLEANUP.parse(schemas.json_body())
    result = cleanup_service.cleanup(_home(), session_name=body["session"], force=body["force"] is True,
                                     actor=_actor())
    return jsonify({"removed": result.removed, "kept": [{"name": n, "why": w} for n, w in result.kept]})


@bp.get("/orphans")
def list_orphans():
    """Maider-tagged VMs no session owns."""
    return jsonify({"orphans": [orphan_json(o) for o in cleanup_service.orphans()]})


@bp.post(f"/orphans/<{ORPHAN_ID}:orphan_id>/adopt")
def adopt_orphan(orphan_id: int):
    """Track an orphan VM as a session."""
    return jsonify(session_json(cleanup_service.adopt_orphan(orphan_id, _actor())))


@bp.delete(f"/orphans/<{ORPHAN_ID}:orphan_id>")
def destroy_orphan(orphan_id: int):
    """Destroy an orphan VM (tracked until the provider confirms)."""
    return jsonify(session_json(cleanup_service.destroy_orphan(orphan_id, _actor()))), 202


@bp.get("/openapi.json")
def openapi_document():
    """This API as an OpenAPI 3 document, generated from the same schemas the routes parse with."""
    return jsonify(openapi.document(current_app.url_map))

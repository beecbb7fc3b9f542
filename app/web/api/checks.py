"""/api/v1 GPU checks behind ``maider check`` and ``validate-perf``: start one (202), follow it, cancel it.

The check runs in the server's background (validate-perf loads the GPU for minutes on a real VM), so a start
answers at once with the run's id; ``GET /checks/<id>`` gives the current step and the verdicts so far.
"""
from __future__ import annotations

from flask import current_app, jsonify

from app.errors import MalformedRequest
from app.services import gpu_checks as checks_service
from app.web.api import bp, openapi
from app.web.api.actor import api_actor

MAX_CHECK_ID = 2**31 - 1


def _start(name: str, kind: str):
    run = checks_service.start(current_app._get_current_object(), name, kind, api_actor())
    return jsonify(checks_service.as_dict(run)), 202


def _check_id(check_id: int) -> int:
    if check_id > MAX_CHECK_ID:
        raise MalformedRequest({"check_id": "names no check"})
    return check_id


@bp.post("/sessions/<name>/check")
def check_session(name: str):
    """Start the quick check: every GPU visible, memory balanced across ranks, one completion returns (seconds)."""
    return _start(name, "check")


@bp.post("/sessions/<name>/validate-perf")
def validate_session_perf(name: str):
    """Start the performance validation: utilization under load, memory headroom, vLLM log warnings, TTFT at three
    prompt lengths (minutes on a real GPU)."""
    return _start(name, "validate-perf")


@bp.get("/checks/<int:check_id>")
def get_check(check_id: int):
    """A check run: its status, the step it is on and the verdicts so far (``ok`` once it is done)."""
    run = checks_service.get(current_app._get_current_object(), _check_id(check_id))
    return jsonify(checks_service.as_dict(run))


@bp.post("/checks/<int:check_id>/cancel")
def cancel_check(check_id: int):
    """Stop a running check; the verdicts given so far stay."""
    run = checks_service.request_cancel(current_app._get_current_object(), _check_id(check_id))
    return jsonify(checks_service.as_dict(run))


openapi.register(path_params={"check_id": {"type": "integer", "minimum": 0, "maximum": MAX_CHECK_ID}}, schemas={
    "CheckRun": {"type": "object", "properties": {
        "id": {"type": "integer"}, "kind": {"type": "string"}, "session": {"type": "string"},
        "status": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
        "step": {"type": "string"}, "steps_total": {"type": "integer"}, "ok": {"type": ["boolean", "null"]},
        "checks": {"type": "array", "items": {"type": "object"}}, "error": {"type": ["string", "null"]}}},
}, operations={
    "api.check_session": openapi.Operation(
        "Start a GPU check of a ready session (follow it at /checks/{id}; 409 while one runs there)",
        (202, "CheckRun"), errors=(409, 422)),
    "api.validate_session_perf": openapi.Operation(
        "Start a performance validation of a ready session under load (follow it at /checks/{id}; 409 while one "
        "runs there)", (202, "CheckRun"), errors=(409, 422)),
    "api.get_check": openapi.Operation("A check run: status, current step, verdicts so far", (200, "CheckRun"),
                                       errors=(400,)),
    "api.cancel_check": openapi.Operation("Cancel a running check (verdicts so far stay)", (200, "CheckRun"),
                                          errors=(400, 422)),
})

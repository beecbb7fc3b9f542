"""/api/v1/sessions/<name>/check and /validate-perf: the GPU checks behind ``maider check`` and ``validate-perf``."""
from __future__ import annotations

from flask import current_app, jsonify

from app.services import gpu_checks as checks_service
from app.web.api import bp, openapi
from app.web.api.actor import api_actor


@bp.post("/sessions/<name>/check")
def check_session(name: str):
    """Every GPU visible, memory balanced across ranks, one completion returns (seconds)."""
    report = checks_service.run(current_app._get_current_object(), name, "check", api_actor())
    return jsonify(report.as_dict())


@bp.post("/sessions/<name>/validate-perf")
def validate_session_perf(name: str):
    """Utilization under load, memory headroom, vLLM log warnings, TTFT at three prompt lengths (about a minute)."""
    report = checks_service.run(current_app._get_current_object(), name, "validate-perf", api_actor())
    return jsonify(report.as_dict())


openapi._RESPONSE_SCHEMAS.setdefault("CheckReport", {"type": "object", "properties": {
    "kind": {"type": "string"}, "session": {"type": "string"}, "ok": {"type": "boolean"},
    "checks": {"type": "array", "items": {"type": "object"}}}})
openapi.OPERATIONS.update({
    "api.check_session": openapi.Operation("GPU check of a ready session: a verdict per check (ok false: a fix)",
                                           (200, "CheckReport"), errors=(422,)),
    "api.validate_session_perf": openapi.Operation("Performance validation of a ready session under load",
                                                   (200, "CheckReport"), errors=(422,)),
})

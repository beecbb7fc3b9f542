"""The session page's GPU check buttons: each starts a check in the server's background and answers with the checks
section at once; the page's one live channel then brings the steps and the verdict (no poller of its own)."""
from __future__ import annotations

from flask import current_app, request

from app.errors import UserError
from app.models import Role
from app.services import gpu_checks as checks_service
from app.services import sessions as sessions_service
from app.web.access import actor, requires
from app.web.sessions import bp, views
from app.web.sessions.sections import render_section


def _shown(name: str):
    uid = request.args.get("uid")
    return views.session_by_uid(name, uid) if uid else sessions_service.get_session(name)


def _start(name: str, kind: str):
    shown = _shown(name)
    try:
        if shown.uid != sessions_service.get_session(name).uid:
            raise UserError(f"this page shows an earlier session named '{name}', which has ended; "
                            "open the live one from the dashboard")
        checks_service.start(current_app._get_current_object(), name, kind, actor())
    except UserError as exc:  # 409 (one already runs) and 422 (not ready) show in the section
        return render_section("checks", shown, None, message=str(exc), level="error")
    return render_section("checks", _shown(name), None)


@bp.post("/sessions/<name>/check")
@requires(Role.OPERATOR)
def check(name: str):
    """Start the quick GPU check; its verdict lines arrive through the live channel."""
    return _start(name, "check")


@bp.post("/sessions/<name>/validate-perf")
@requires(Role.OPERATOR)
def validate_perf(name: str):
    """Start the performance check under load; its steps and verdicts arrive through the live channel."""
    return _start(name, "validate-perf")


@bp.post("/sessions/<name>/checks/<int:check_id>/cancel")
@requires(Role.OPERATOR)
def cancel_check(name: str, check_id: int):
    """Cancel the running check; the verdicts given so far stay."""
    shown = _shown(name)
    try:
        run = checks_service.get(current_app._get_current_object(), check_id)
        if run.session_id != shown.id:
            raise UserError(f"check #{check_id} is not one of '{name}''s")
        checks_service.request_cancel(current_app._get_current_object(), check_id)
    except UserError as exc:
        return render_section("checks", shown, None, message=str(exc), level="error")
    return render_section("checks", shown, None, message="Cancelling…", level="info")

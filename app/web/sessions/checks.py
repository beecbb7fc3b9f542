"""The session page's GPU check buttons."""
from __future__ import annotations

from flask import current_app, render_template

from app.services import gpu_checks as checks_service
from app.web.access import actor
from app.web.sessions import bp


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

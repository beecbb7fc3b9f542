"""GPU checks of a ready session, for the CLI, the API and the session page's buttons.

A check is a row plus a thread of the server (``app.engine.check_runner``): starting one answers at once, and the
row says which step runs and which verdicts are in. One check at a time per session: two would load the same GPU
and spoil each other's figures. Each verdict is also recorded in the session's events.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask

from app.benchmark_models import RunState
from app.check_models import CheckRun
from app.engine import check_runner
from app.engine.identity import load_identity
from app.errors import ConflictError, NotFoundError, UserError
from app.extensions import db
from app.models import Session, SessionState, utcnow
from app.services import sessions as sessions_service

KINDS = tuple(check_runner.KINDS)
STOPPED_MESSAGE = "maider stopped while this check was running"


def start(app: Flask, name: str, kind: str, actor: str) -> CheckRun:
    """Start ``check`` or ``validate-perf`` on a ready session; ConflictError while one already runs there."""
    if kind not in check_runner.KINDS:
        raise UserError(f"no check called '{kind}': use one of {', '.join(KINDS)}")
    session = sessions_service.get_session(name)
    if session.state != SessionState.READY or not session.api_port:
        raise UserError(f"session '{session.name}' is {session.state.label.lower()}; GPU checks need a ready "
                        "session")
    _refuse_second(app, session)
    identity = load_identity(Path(app.config["MAIDER_HOME"]), session.uid)
    run = CheckRun(session_id=session.id, session_name=session.name, kind=kind, created_by=actor[:64],
                   steps_total=check_runner.KINDS[kind][1], results=[], step="starting")
    db.session.add(run)
    db.session.commit()
    if not check_runner.start(app, run.id, session.id, identity, actor):  # another start won the race
        db.session.delete(run)
        db.session.commit()
        _refuse_second(app, session)
    return run


def _refuse_second(app: Flask, session: Session) -> None:
    running = check_runner.running_on(app, session.id)
    if running is None:
        return
    other = db.session.get(CheckRun, running)
    what = other.kind if other is not None else "a check"
    raise ConflictError(f"{what} #{running} is already running on '{session.name}': wait for its verdict or "
                        f"cancel it (maider check runs one at a time per session, so the load of one does not "
                        f"skew the other)")


def get(app: Flask, run_id: int) -> CheckRun:
    """The check run; one left running by a stopped server is marked failed the first time it is read."""
    run = db.session.get(CheckRun, run_id)
    if run is None:
        raise NotFoundError(f"no check run #{run_id}")
    return _settled(app, run)


def _settled(app: Flask, run: CheckRun) -> CheckRun:
    if not run.state.is_finished() and run.id not in check_runner.active_checks(app):
        db.session.refresh(run)  # its thread may have finished since this request read the row
        if not run.state.is_finished():
            run.status, run.error, run.step, run.finished_at = RunState.FAILED.value, STOPPED_MESSAGE, "", utcnow()
            db.session.commit()
    return run


def latest(app: Flask, session: Session) -> CheckRun | None:
    """The session's newest check run, for its page."""
    run = db.session.scalar(sa.select(CheckRun).where(CheckRun.session_id == session.id)
                            .order_by(CheckRun.id.desc()).limit(1))
    return _settled(app, run) if run is not None else None


def request_cancel(app: Flask, run_id: int) -> CheckRun:
    """Stop a running check: load in flight is cut, the verdicts given so far stay."""
    run = get(app, run_id)
    if run.state.is_finished():
        raise UserError(f"check #{run_id} has already ended ({run.status})")
    active = check_runner.active_checks(app).get(run_id)
    if active is not None:
        active.control.cancel.set()
    return run


def as_dict(run: CheckRun) -> dict[str, Any]:
    """What the API answers: the state, the current step, the verdicts so far, and ``ok`` once done."""
    return {"id": run.id, "kind": run.kind, "session": run.session_name, "status": run.status, "step": run.step,
            "steps_total": run.steps_total, "ok": run.ok, "checks": list(run.results or []), "error": run.error,
            "created_by": run.created_by}

"""Runs ``check`` or ``validate-perf`` in a background thread of the server and writes each step and verdict to its row.

validate-perf keeps the GPU busy for minutes on a real VM: held in a request it would tie up a waitress thread and
meet browser and proxy timeouts, with nothing to show meanwhile. Here the request only starts the thread; the panel's
live channel and the CLI read the row, which changes a handful of times per run (no timed window waits on SQLite).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from flask import Flask

from app.check_models import CheckRun
from app.benchmark_models import RunState
from app.domain.gpu_checks import CheckResult
from app.engine import gpu_checks
from app.engine.identity import SessionIdentity
from app.engine.runtime import runtime
from app.engine.state import record_event
from app.extensions import db
from app.models import Session, utcnow
from app.redaction import redact

log = logging.getLogger(__name__)
EXTENSION_KEY = "maider.check_runs"
KINDS = {"check": (gpu_checks.check, gpu_checks.CHECK_STEPS),
         "validate-perf": (gpu_checks.validate_perf, gpu_checks.PERF_STEPS)}


@dataclass
class ActiveCheck:
    """A running check's thread-side handle: the cancel flag the service sets."""

    session_id: int
    control: gpu_checks.CheckControl = field(default_factory=gpu_checks.CheckControl)


def active_checks(app: Flask) -> dict[int, ActiveCheck]:
    return app.extensions.setdefault(EXTENSION_KEY, {})


_start_lock = threading.Lock()


def running_on(app: Flask, session_id: int) -> int | None:
    """The id of the check running on this session now, if any."""
    with _start_lock:
        return next((run_id for run_id, a in active_checks(app).items() if a.session_id == session_id), None)


def start(app: Flask, run_id: int, session_id: int, identity: SessionIdentity, actor: str) -> bool:
    """Start the run's thread (it owns the row from here on); False when another check of the session runs."""
    with _start_lock:
        if any(a.session_id == session_id for a in active_checks(app).values()):
            return False
        active = ActiveCheck(session_id)
        active_checks(app)[run_id] = active
    thread = threading.Thread(target=_run, args=(app, run_id, identity, actor, active),
                              name=f"maider-check-{run_id}", daemon=True)
    thread.start()
    return True


def _run(app: Flask, run_id: int, identity: SessionIdentity, actor: str, active: ActiveCheck) -> None:
    with app.app_context():
        try:
            run = db.session.get(CheckRun, run_id)
            session = db.session.get(Session, active.session_id)
            # Detached, so the commits below do not expire it: validate-perf's sampler thread reads its fields.
            db.session.refresh(session)
            db.session.expunge(session)
            run.status, run.started_at = RunState.RUNNING.value, utcnow()
            db.session.commit()

            def on_step(step: str) -> None:
                run.step = step[:200]
                db.session.commit()

            def on_result(result: CheckResult) -> None:
                run.results = [*(run.results or []), result.as_dict()]  # a new list: SQLAlchemy sees the change
                db.session.commit()

            active.control.on_step, active.control.on_result = on_step, on_result
            check, _ = KINDS[run.kind]
            try:
                results = check(runtime(app), session, identity, active.control)
            except gpu_checks.CheckCancelled:
                _finish(run, RunState.CANCELLED, "cancelled", actor, session)
                return
            _finish(run, RunState.DONE, None, actor, session, results)
        except Exception as exc:  # the thread must record why it stopped, whatever happened
            log.exception("check run %s failed", run_id)
            db.session.rollback()
            run = db.session.get(CheckRun, run_id)
            if run is not None:
                _finish(run, RunState.FAILED, redact(f"{type(exc).__name__}: {exc}")[:500], actor, None)
        finally:
            active_checks(app).pop(run_id, None)
            db.session.remove()


def _finish(run: CheckRun, state: RunState, error: str | None, actor: str, session: Session | None,
            results: list[CheckResult] | None = None) -> None:
    run.status, run.error, run.step, run.finished_at = state.value, error, "", utcnow()
    if results is not None and session is not None:
        session = db.session.get(Session, session.id)  # attached again, for its event
        run.results = [r.as_dict() for r in results]
        failed = [r for r in results if not r.ok]
        message = (f"{run.kind}: all {len(results)} checks passed" if not failed
                   else f"{run.kind} failed: " + "; ".join(f"{r.name}: {r.message}" for r in failed))
        record_event(session, "check", message[:500], actor=actor, ok=not failed, checks=run.results)
    db.session.commit()


def wait_for(app: Flask, run_id: int, timeout_s: float = 60.0) -> None:
    """Block until a check's thread has finished (tests and shutdown)."""
    deadline = time.monotonic() + timeout_s
    while run_id in active_checks(app) and time.monotonic() < deadline:
        time.sleep(0.02)

"""The provisioning worker: claim a due session, run one bounded step for its state, write the result.

Steps are idempotent and resumable, so a restarted maider simply picks every mid-flight session up where its row
says it was. A destroy request from the user is a flag on the row; the worker turns it into ``destroying`` at its
next step, so a user's click never races a step in flight.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa
from flask import Flask

from app.engine.claims import release, still_holds, try_claim
from app.engine.configure import step_configuring, step_rebooting
from app.engine.launch import step_booting, step_creating, step_requested
from app.engine.runtime import runtime
from app.engine.startup import step_starting, step_switching_model
from app.engine.state import record_event, transition
from app.engine.steps import StepContext, fail_launch
from app.engine.teardown import step_destroying
from app.extensions import db
from app.models import Reason, Session, SessionState

log = logging.getLogger(__name__)

STEPS: dict[SessionState, Callable[[StepContext], None]] = {
    SessionState.REQUESTED: step_requested,
    SessionState.CREATING: step_creating,
    SessionState.BOOTING: step_booting,
    SessionState.CONFIGURING: step_configuring,
    SessionState.REBOOTING: step_rebooting,
    SessionState.STARTING: step_starting,
    SessionState.SWITCHING_MODEL: step_switching_model,
    SessionState.DESTROYING: step_destroying,
}
MAX_SESSIONS_PER_TICK = 8


def due_session_ids(now) -> list[int]:
    """Sessions with work to do now, least recently processed first."""
    active = [state.value for state in STEPS]
    query = (
        sa.select(Session.id)
        .where(sa.or_(Session.status.in_(active), Session.destroy_requested_at.is_not(None)))
        .where(Session.status != SessionState.DESTROYED.value)
        .where(sa.or_(Session.next_attempt_at.is_(None), Session.next_attempt_at <= now,
                      Session.destroy_requested_at.is_not(None)))
        .where(sa.or_(Session.lease_expires_at.is_(None), Session.lease_expires_at < now))
        .order_by(Session.last_processed_at.is_not(None), Session.last_processed_at)
        .limit(MAX_SESSIONS_PER_TICK)
    )
    return list(db.session.scalars(query))


def _apply_destroy_request(ctx: StepContext) -> None:
    session = ctx.session
    if session.state == SessionState.FAILED and session.destroyed_at is not None:
        session.destroy_requested_at = None  # nothing left to destroy
        return
    state = session.engine_state or {}
    if session.state != SessionState.DESTROYING:
        transition(session, SessionState.DESTROYING, now=ctx.now,
                   reason=Reason(state.get("destroy_reason", Reason.USER_REQUESTED.value)),
                   actor=state.get("destroy_requested_by", "local"), message=state.get("destroy_message"))
    session.destroy_requested_at = None


def process_session(app: Flask, session_id: int) -> bool:
    """Claim and advance one session by one step; False if another worker had it."""
    engine = runtime(app)
    now = engine.clock()
    token = try_claim(session_id, now)
    if token is None:
        return False
    session = db.session.get(Session, session_id)
    try:
        ctx = StepContext(session, engine, now)
        if session.destroy_requested_at is not None:
            _apply_destroy_request(ctx)
        step = STEPS.get(session.state)
        if step is not None and (session.next_attempt_at is None or session.next_attempt_at <= now):
            step(ctx)
        if still_holds(session, token):
            db.session.commit()
        else:
            log.warning("session %s: lease lost during a step; dropping its result", session.name)
            db.session.rollback()
    except Exception as exc:  # noqa: BLE001 -- a bug in one step must not kill the worker or strand the VM
        db.session.rollback()
        log.exception("session %s: step failed", session_id)
        session = db.session.get(Session, session_id)
        if session is not None:
            _after_internal_error(StepContext(session, engine, now), exc)
            db.session.commit()
    finally:
        release(session_id, token, engine.clock())
    return True


INTERNAL_ERROR_RETRY = timedelta(seconds=30)


def _after_internal_error(ctx: StepContext, exc: Exception) -> None:
    """A bug must cost neither a VM the user wants nor money: keep a switching VM, keep retrying a destroy."""
    session = ctx.session
    message = f"internal error: {type(exc).__name__}: {exc}"
    if session.state == SessionState.DESTROYING:
        session.next_attempt_at = ctx.now + INTERNAL_ERROR_RETRY  # keep trying, without a hot loop
        record_event(session, "error", f"{message}; retrying the destroy")
    elif session.state == SessionState.SWITCHING_MODEL:
        transition(session, SessionState.FAILED, reason=Reason.INTERNAL_ERROR, now=ctx.now,
                   message=f"{message}. The VM is still running (and billed): switch again or destroy it.")
    elif session.state.is_launching():
        fail_launch(ctx, Reason.INTERNAL_ERROR, message)


def run_once(app: Flask) -> int:
    """Advance every due session by one step; return how many were processed."""
    now = runtime(app).clock()
    processed = 0
    for session_id in due_session_ids(now):
        processed += process_session(app, session_id)
    return processed

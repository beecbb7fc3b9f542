"""The one way a session changes state, and the event log every change writes.

Every move goes through ``transition``: it checks the move against ``ALLOWED_TRANSITIONS``, demands a reason for
failures and destruction, stamps the time, resets the step schedule, and writes an Event. That single table then
gives the stage timeline, the activity log, the audit log and the time-to-ready figures.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from app.errors import InvalidTransition
from app.extensions import db
from app.models import ALLOWED_TRANSITIONS, Event, Reason, Session, SessionState, utcnow
from app.redaction import redact

log = logging.getLogger(__name__)

_NEEDS_REASON = frozenset({SessionState.FAILED, SessionState.DESTROYING, SessionState.DESTROYED})


def _redact_values(value: Any) -> Any:
    """Mask secrets in every string of an event's detail (log tails and evidence lines come from the VM)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_values(item) for item in value]
    return value


def record_event(session: Session | None, kind: str, message: str, *, actor: str = "maider",
                 at: datetime | None = None, **detail: Any) -> Event:
    """Add an event to the current transaction (the caller commits)."""
    event = Event(session=session, kind=kind, message=redact(message), actor=actor, at=at or utcnow(),
                  detail=_redact_values(detail))
    db.session.add(event)
    return event


def transition(session: Session, target: SessionState, *, reason: Reason | None = None, message: str | None = None,
               actor: str = "maider", now: datetime | None = None) -> bool:
    """Move ``session`` to ``target``; False if it is already there. Raises InvalidTransition for a forbidden move."""
    current = session.state
    if current == target:
        return False
    if target not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransition(current.value, target.value)
    if target in _NEEDS_REASON and reason is None:
        raise ValueError(f"moving a session to {target.value} needs a reason")
    now = now or utcnow()
    session.status = target.value
    session.status_changed_at = now
    session.stage_started_at = now
    session.poll_count = 0
    session.next_attempt_at = None
    session.deadline_at = None
    session.stage_detail = None
    if reason is not None:
        session.status_reason = reason.value
    message = redact(message) if message else message  # error text from libraries must not carry a secret
    session.status_message = message  # a message belongs to the state it explains
    text = f"{current.label} → {target.label}"
    if message:
        text += f": {message}"
    record_event(session, "state", text, actor=actor, at=now, **{
        "from": current.value, "to": target.value, "reason": reason.value if reason else None,
    })
    log.info("session %s: %s -> %s%s", session.name, current.value, target.value,
             f" ({reason.value})" if reason else "")
    return True

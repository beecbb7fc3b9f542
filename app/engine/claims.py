"""Claiming session rows so that exactly one worker thread works on a session at a time.

SQLite has no ``SELECT ... FOR UPDATE SKIP LOCKED`` (SQLAlchemy silently drops ``with_for_update`` there), so a claim
is a compare-and-swap UPDATE on a lease column; the claimer proceeds only when it changed exactly one row.

The lease outlasts the slowest step (a provider call with all its retries, a 5-minute container recreate): were it
to expire mid-step, a second worker could act on the same session at once -- e.g. destroy it while the first is
still creating its VM. Only one server owns a MAIDER_HOME and it voids leases when it starts, so a long lease never
strands a session.
"""
from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import sqlalchemy as sa

from app.extensions import db
from app.models import Session

LEASE = timedelta(minutes=15)
log = logging.getLogger(__name__)


def try_claim(session_id: int, now: datetime, lease: timedelta = LEASE) -> str | None:
    """Claim a session for one step; return the lease token, or None if another worker holds it."""
    token = secrets.token_hex(8)
    result = db.session.execute(
        sa.update(Session)
        .where(Session.id == session_id)
        .where(sa.or_(Session.lease_expires_at.is_(None), Session.lease_expires_at < now))
        .values(lease_token=token, lease_expires_at=now + lease)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return token if result.rowcount == 1 else None


def still_holds(session: Session, token: str) -> bool:
    """True while ``token`` is the session's lease (re-read from the database)."""
    current = db.session.scalar(sa.select(Session.lease_token).where(Session.id == session.id))
    return current == token


def release(session_id: int, token: str, processed_at: datetime) -> None:
    """Give the lease back (only if still ours) and stamp the processing time."""
    db.session.execute(
        sa.update(Session)
        .where(Session.id == session_id, Session.lease_token == token)
        .values(lease_token=None, lease_expires_at=None, last_processed_at=processed_at)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


@contextmanager
def claimed(session_id: int, clock: Callable[[], datetime]) -> Iterator[Session | None]:
    """Hold the session's lease for a block: yields the session (None if another worker has it), commits the
    block's changes only if the lease is still ours, rolls back on error, and always releases."""
    token = try_claim(session_id, clock())
    if token is None:
        yield None
        return
    try:
        session = db.session.get(Session, session_id)
        yield session
        if session is not None and still_holds(session, token):
            db.session.commit()
        else:
            log.warning("session %s: lease lost; dropping this change", session_id)
            db.session.rollback()
    except BaseException:
        db.session.rollback()
        raise
    finally:
        release(session_id, token, clock())


def for_each_claimed(session_ids: Iterable[int], clock: Callable[[], datetime], work: Callable[[Session], None],
                     worker: str) -> int:
    """Run ``work`` on each session this worker can claim, each in its own transaction; return how many ran.

    A failure in one session is logged and rolled back; the others still get their turn.
    """
    done = 0
    for session_id in session_ids:
        try:
            with claimed(session_id, clock) as session:
                if session is not None:
                    work(session)
                    done += 1
        except Exception:  # noqa: BLE001 -- one session's failure must not stop the worker
            log.exception("%s: session %s", worker, session_id)
    return done

"""Session use cases: list, look up, and summarise sessions for the panel, the API and the CLI."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from app.domain.cost import accrued_cost, runtime
from app.errors import NotFoundError
from app.extensions import db
from app.models import Session, SessionState, utcnow


@dataclass(frozen=True)
class SessionCost:
    runtime: timedelta  # billable time so far (or in total, once destroyed)
    cost: float  # estimated USD


@dataclass(frozen=True)
class Overview:
    sessions: list[Session]  # live sessions (not destroyed), newest first
    burn_rate: float  # USD/h of every VM that may be running now
    spent_today: float  # estimated USD accrued since 00:00 UTC, live and destroyed sessions
    spent_total: float  # estimated USD over all history
    now: datetime


def session_cost(session: Session, now: datetime | None = None) -> SessionCost:
    """Runtime and estimated cost from the provider's creation time to deletion (or now)."""
    now = now or utcnow()
    elapsed = runtime(session.billing_started_at, session.destroyed_at, now)
    return SessionCost(elapsed, accrued_cost(session.hourly_price, elapsed))


def get_session(name: str) -> Session:
    """Load a session by name or raise NotFoundError."""
    session = db.session.scalar(sa.select(Session).where(Session.name == name))
    if session is None:
        raise NotFoundError(f"no session named '{name}'")
    return session


def live_sessions() -> list[Session]:
    """Every session that is not destroyed, newest first."""
    return list(db.session.scalars(
        sa.select(Session).where(Session.status != SessionState.DESTROYED.value).order_by(Session.id.desc())
    ))


def dashboard_overview(now: datetime | None = None) -> Overview:
    """Live sessions and money totals for the dashboard."""
    now = now or utcnow()
    live = live_sessions()
    burn = sum(s.hourly_price for s in live if s.state.may_cost_money() and s.instance_id)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    spent_today = 0.0
    spent_total = 0.0
    for session in db.session.scalars(sa.select(Session).where(Session.instance_id.is_not(None))):
        started = session.billing_started_at
        if started is None:
            continue
        spent_total += session_cost(session, now).cost
        today_start = max(started, midnight)
        today_elapsed = runtime(today_start, session.destroyed_at, now)
        if session.destroyed_at is None or session.destroyed_at > midnight:
            spent_today += accrued_cost(session.hourly_price, today_elapsed)
    return Overview(live, burn, spent_today, spent_total, now)

"""The watchdog: destroys forgotten VMs -- idle too long, past their hard lifetime, or over their budget.

Idle = no vLLM requests (from /metrics; tunnel bytes do not count: maider's own probes move them); the monitor
keeps ``last_activity_at`` current. A warning (panel banner, and a desktop notification where ``notify-send``
exists) comes first; ``extend`` resets it.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
from datetime import timedelta

import sqlalchemy as sa
from flask import Flask

from app.domain.cost import accrued_cost, format_money, runtime as billable_runtime
from app.engine.claims import for_each_claimed
from app.engine.runtime import runtime
from app.engine.state import record_event
from app.extensions import db
from app.models import Session, SessionState, vm_may_bill_clause

log = logging.getLogger(__name__)


def _notify_desktop(title: str, body: str) -> None:
    """Best effort: a desktop notification on Linux desktops; silently nothing elsewhere."""
    notifier = shutil.which("notify-send")
    if notifier:
        try:
            subprocess.run([notifier, "--app-name=maider", title, body], timeout=5, check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            pass


def _request_destroy(session: Session, why: str, message: str, now) -> None:
    session.destroy_requested_at = session.destroy_requested_at or now
    session.engine_state = {**(session.engine_state or {}), "destroy_requested_by": "watchdog",
                            "destroy_message": message, "destroy_reason": why}
    record_event(session, "watchdog", message)
    _notify_desktop("maider is destroying a VM", f"{session.name}: {message}")


def check_session(session: Session, now, warning: timedelta) -> None:
    """Apply the budget cap, the lifetime limit and the idle timeout to one session."""
    elapsed = billable_runtime(session.billing_started_at, None, now)
    if session.budget_usd and accrued_cost(session.hourly_price, elapsed) >= session.budget_usd:
        _request_destroy(session, "budget_exceeded",
                         f"budget of {format_money(session.budget_usd)} reached: destroying the VM", now)
        return
    if session.max_lifetime_hours and elapsed >= timedelta(hours=session.max_lifetime_hours):
        _request_destroy(session, "max_lifetime",
                         f"maximum lifetime of {session.max_lifetime_hours:g} h reached: destroying the VM", now)
        return
    if session.state != SessionState.READY or not session.idle_timeout_minutes:
        return
    idle_since = session.last_activity_at or session.ready_at or now
    idle = now - idle_since
    timeout = timedelta(minutes=session.idle_timeout_minutes)
    if idle >= timeout:
        _request_destroy(session, "watchdog_idle",
                         f"idle for {int(idle.total_seconds() // 60)} min (limit {session.idle_timeout_minutes}): "
                         "destroying the VM", now)
    elif idle >= timeout - warning and session.watchdog_warned_at is None:
        session.watchdog_warned_at = now
        minutes_left = max(int((timeout - idle).total_seconds() // 60), 0)
        record_event(session, "watchdog", f"idle: will be destroyed in about {minutes_left} min unless used or "
                                          "extended")
        _notify_desktop("maider: idle VM", f"{session.name} will be destroyed in about {minutes_left} min "
                                           "(run 'maider extend' to keep it)")


def run_once(app: Flask) -> int:
    """Check every session whose VM may be billing -- failed ones with a kept VM included."""
    engine = runtime(app)
    warning = timedelta(minutes=int(app.config.get("MAIDER_WATCHDOG_WARNING_MINUTES", 5)))
    ids = list(db.session.scalars(sa.select(Session.id).where(
        vm_may_bill_clause(), Session.status != SessionState.DESTROYING.value,
        Session.destroy_requested_at.is_(None))))
    return for_each_claimed(ids, engine.clock, lambda session: check_session(session, engine.clock(), warning),
                            "watchdog")

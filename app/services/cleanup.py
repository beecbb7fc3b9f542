"""Cleanup and orphans: reconcile local sessions with what the provider says exists.

Only a provider's 404 removes a session's VM from the books; an unreachable API changes nothing. ``--force`` is the
user's word that they deleted a VM by hand.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from flask import current_app

from app.engine.claims import claimed
from app.engine.identity import remove_identity
from app.engine.runtime import runtime
from app.engine.state import record_event, transition
from app.errors import NotFoundError, UserError
from app.extensions import db
from app.models import OrphanInstance, Reason, Session, SessionState, utcnow
from app.providers.base import NotFound, ProviderError
from app.services import sessions as sessions_service


@dataclass(frozen=True)
class CleanupResult:
    removed: list[str]  # sessions whose VM the provider confirmed gone
    kept: list[tuple[str, str]]  # (session, why it was kept)


def cleanup(home: Path, *, session_name: str | None = None, force: bool = False,
            actor: str = "local") -> CleanupResult:
    """Forget sessions whose VMs are gone; with ``force`` and a name, trust the user that it was deleted by hand."""
    if force and not session_name:
        raise UserError("--force needs --session NAME: maider never forgets every VM at once")
    if session_name:
        candidates = [sessions_service.get_session(session_name)]
    else:
        candidates = [s for s in sessions_service.live_sessions()
                      if s.destroyed_at is None and s.state != SessionState.DESTROYING]
    engine = runtime(current_app._get_current_object())
    removed: list[str] = []
    kept: list[tuple[str, str]] = []
    for candidate in candidates:
        name = candidate.name
        with claimed(candidate.id, engine.clock) as session:
            if session is None:
                kept.append((name, "a worker is acting on it right now; try again in a moment"))
            elif session.destroyed_at is not None:
                kept.append((name, "already destroyed"))
            elif force:
                _forget_deleted_by_hand(engine, session, actor)
                removed.append(name)
            elif session.instance_id is None:
                kept.append((name, "no VM id yet (still launching)"))
            else:
                why = _check_gone(engine, session, actor)
                (kept.append((name, why)) if why else removed.append(name))
    return CleanupResult(removed, kept)


def _check_gone(engine, session: Session, actor: str) -> str | None:
    """Ask the provider; on a 404 hand the session to the destroy step (which confirms and cleans up)."""
    try:
        engine.provider_for(session).get(session.instance_id or "")
    except NotFound:
        transition(session, SessionState.DESTROYING, reason=Reason.VANISHED, actor=actor,
                   message=f"the provider confirmed VM {session.instance_id} no longer exists")
        return None
    except ProviderError as exc:
        return f"could not ask the provider ({exc}); kept"
    return "VM still exists"


def _forget_deleted_by_hand(engine, session: Session, actor: str) -> None:
    """The user deleted the VM outside maider: close its tunnels, forget its keys and mark it gone."""
    engine.tunnels.close(session.uid)
    engine.drop_remote(session.uid)
    remove_identity(engine.home, session.uid)
    message = f"removed from maider's books by {actor} (--force): VM deleted by hand"
    session.destroyed_at = utcnow()
    session.tunnel_state = "down"
    if session.state not in (SessionState.DESTROYED, SessionState.FAILED):
        if session.state != SessionState.DESTROYING:
            transition(session, SessionState.DESTROYING, reason=Reason.FORCED_CLEANUP, message=message, actor=actor)
        transition(session, SessionState.DESTROYED, reason=Reason.FORCED_CLEANUP, message=message, actor=actor)
    record_event(session, "action", message, actor=actor)


def _orphan(orphan_id: int) -> OrphanInstance:
    orphan = db.session.get(OrphanInstance, orphan_id)
    if orphan is None:
        raise NotFoundError(f"no orphan VM #{orphan_id} (it may already be handled)")
    return orphan


def _free_orphan_name(instance_id: str) -> str:
    """``orphan-<id>``, or with a number after it while a live session holds that name (the unique live index)."""
    base = re.sub(r"[^a-z0-9-]+", "-", f"orphan-{instance_id}".lower())[:36].rstrip("-")
    taken = set(db.session.scalars(sa.select(Session.name).where(Session.destroyed_at.is_(None),
                                                                  Session.name.like(f"{base}%"))))
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base}-{number}"
    return name


def _session_for_orphan(orphan: OrphanInstance, state: SessionState, actor: str, message: str) -> Session:
    import uuid

    uid = uuid.uuid4().hex
    session = Session(uid=uid, name=_free_orphan_name(orphan.instance_id), provider=orphan.provider,
                      instance_id=orphan.instance_id, label=orphan.label, region=orphan.region, plan=orphan.plan,
                      model_id="unknown", served_name="unknown", hourly_price=orphan.hourly_price,
                      provider_created_at=orphan.provider_created_at, created_by=actor, status=state.value,
                      status_message=message)
    if state == SessionState.DESTROYING:
        session.status_reason = Reason.USER_REQUESTED.value
    db.session.add(session)
    db.session.delete(orphan)
    record_event(session, "action", message, actor=actor)
    return session


def adopt_orphan(orphan_id: int, actor: str = "local") -> Session:
    """Track an orphan VM as a session so its cost shows and it can be destroyed from maider."""
    orphan = _orphan(orphan_id)
    session = _session_for_orphan(
        orphan, SessionState.FAILED, actor,
        f"adopted VM {orphan.instance_id}: maider does not hold its keys, so it cannot reach its services; "
        "destroy it when you no longer need it")
    session.status_reason = Reason.LAUNCH_FAILED.value
    db.session.commit()
    return session


def destroy_orphan(orphan_id: int, actor: str = "local") -> Session:
    """Destroy an orphan VM; it is tracked as a session until the provider confirms the deletion."""
    orphan = _orphan(orphan_id)
    session = _session_for_orphan(orphan, SessionState.DESTROYING, actor, f"destroying orphan VM {orphan.instance_id}")
    db.session.commit()
    return session


def orphans() -> list[OrphanInstance]:
    return list(db.session.scalars(sa.select(OrphanInstance).order_by(OrphanInstance.first_seen_at)))

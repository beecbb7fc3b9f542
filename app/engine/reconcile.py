"""The reconciler: compare the provider's maider-tagged VMs with the database.

- A tagged VM no session owns is an orphan (a crash before its id was saved, another laptop's database, a restore):
  it is listed for the user to adopt or destroy -- never silently deleted, never silently ignored.
- A live session whose VM is missing from the list is checked with ``get``: only a 404 marks it vanished.
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Flask

from app.engine import failsafe
from app.engine.claims import claimed
from app.engine.runtime import runtime
from app.engine.state import record_event, transition
from app.extensions import db
from app.models import OrphanInstance, Reason, Session, SessionState
from app.providers.base import AuthError, InstanceStatus, NotFound, ProviderError

log = logging.getLogger(__name__)


def _providers_in_use(app: Flask) -> set[tuple[str, str]]:
    """(provider, workdir) pairs to ask: the server's own configuration plus every live session's."""
    default = "simulated" if app.config.get("MAIDER_DEMO") else None
    pairs = set()
    if default:
        pairs.add((default, app.config["MAIDER_WORKDIR"]))
    else:
        from app.config import load_settings

        settings = load_settings(app.config["MAIDER_WORKDIR"])
        if settings.provider != "linode" or settings.linode_token is not None:
            pairs.add((settings.provider, app.config["MAIDER_WORKDIR"]))
    for provider, workdir in db.session.execute(
            sa.select(Session.provider, Session.workdir).where(Session.destroyed_at.is_(None)).distinct()):
        pairs.add((provider, workdir or app.config["MAIDER_WORKDIR"]))
    return pairs


def _vanished(app: Flask, session: Session) -> None:
    """Confirm with ``get`` before believing a VM is gone."""
    provider = runtime(app).provider_for(session)
    try:
        provider.get(session.instance_id or "")
    except NotFound:
        ended = failsafe.explain_vanished(session, provider, runtime(app).clock())
        if ended is not None:  # armed: the VM's own failsafe deleted it while maider was away; billing stopped then
            why, when = ended
            session.destroyed_at = when
            transition(session, SessionState.DESTROYING, reason=Reason.FAILSAFE, actor="failsafe",
                       message=f"the failsafe on the VM deleted it at {when:%Y-%m-%d %H:%M} UTC: {why}")
            return
        message = f"the provider says VM {session.instance_id} no longer exists (deleted outside maider?)"
        transition(session, SessionState.DESTROYING, reason=Reason.VANISHED, message=message)
    except ProviderError as exc:
        log.info("reconcile: could not check %s: %s", session.name, exc)


def reconcile_provider(app: Flask, provider_name: str, workdir: str) -> None:
    engine = runtime(app)
    provider = engine.provider(provider_name, workdir)
    try:
        instances = provider.list_owned()
    except ProviderError as exc:
        if isinstance(exc, AuthError):
            engine.forget_provider(provider_name, workdir)
        log.info("reconcile: cannot list %s instances: %s", provider_name, exc)
        return
    now = engine.clock()
    listed = {instance.id: instance for instance in instances}
    # Only sessions not confirmed gone own a VM: one listed for a destroyed session (a forced cleanup that was
    # wrong, a create that landed after its session ended) is an orphan and must be shown.
    owners = sa.and_(Session.provider == provider_name, Session.destroyed_at.is_(None))
    known_labels = set(db.session.scalars(sa.select(Session.label).where(owners)))
    known_ids = set(db.session.scalars(sa.select(Session.instance_id).where(owners, Session.instance_id.is_not(None))))
    existing = {o.instance_id: o for o in db.session.scalars(
        sa.select(OrphanInstance).where(OrphanInstance.provider == provider_name))}
    for instance in instances:
        if instance.label in known_labels or instance.id in known_ids or instance.status == InstanceStatus.DELETING:
            continue
        orphan = existing.get(instance.id)
        if orphan is None:
            db.session.add(OrphanInstance(
                provider=provider_name, instance_id=instance.id, label=instance.label, region=instance.region,
                plan=instance.plan, hourly_price=instance.hourly_price, provider_created_at=instance.created_at,
                first_seen_at=now, last_seen_at=now))
            record_event(None, "orphan", f"found VM {instance.id} ({instance.label}) tagged maider but unknown to "
                                         "this database: adopt or destroy it from the dashboard")
        else:
            orphan.last_seen_at = now
    for instance_id, orphan in existing.items():
        if instance_id not in listed:
            db.session.delete(orphan)
    db.session.commit()
    watched = [SessionState.READY.value, SessionState.STARTING.value, SessionState.CONFIGURING.value,
               SessionState.SWITCHING_MODEL.value]
    for session_id in list(db.session.scalars(sa.select(Session.id).where(
            Session.provider == provider_name, Session.status.in_(watched), Session.instance_id.is_not(None)))):
        with claimed(session_id, engine.clock) as session:
            if session is not None and session.instance_id not in listed:
                _vanished(app, session)


def run_once(app: Flask) -> int:
    """Reconcile every provider in use."""
    pairs = _providers_in_use(app)
    for provider_name, workdir in pairs:
        try:
            reconcile_provider(app, provider_name, workdir)
        except Exception:  # noqa: BLE001
            db.session.rollback()
            log.exception("reconcile: %s", provider_name)
    return len(pairs)

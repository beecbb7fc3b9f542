"""The on-VM failsafe, maider's side: arm it over SSH, keep its heartbeat, renew and revoke its token.

The VM deletes itself (``cloud_init/maider-failsafe.py``) when maider goes silent and vLLM is idle, or at its hard
lifetime or budget -- so a closed laptop stops the bill too. The token lives only in memory here and in the VM's 0600
file; the session row keeps its id (to revoke it) and the times people see.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

from app.config import load_settings
from app.domain import failsafe as rules
from app.domain import vm_contract as vm
from app.engine.state import record_event
from app.models import Session
from app.providers.base import AuthError, NoFailsafeNeeded, NotFound, Provider, ProviderError
from app.remote import RemoteError, RemoteHost

log = logging.getLogger(__name__)

STATE_KEY = "failsafe"  # engine_state entry: {enabled, token_id, expires_at, silence_minutes, armed_at, heartbeat_at}


def state_of(session: Session) -> dict:
    return dict((session.engine_state or {}).get(STATE_KEY) or {})


def _save(session: Session, state: dict) -> None:
    session.engine_state = {**(session.engine_state or {}), STATE_KEY: state}


def is_armed(session: Session) -> bool:
    return bool(state_of(session).get("token_id"))


def limits_for(session: Session, silence_minutes: int, now: datetime) -> rules.Limits:
    return rules.Limits(silence_minutes=silence_minutes, max_lifetime_hours=session.max_lifetime_hours,
                        budget_usd=session.budget_usd, hourly_price=session.hourly_price or 0.0,
                        started_at=session.billing_started_at or now)


def arm(session: Session, provider: Provider, remote: RemoteHost, now: datetime) -> None:
    """Mint the session's token and write the failsafe's configuration to the VM (once; a reboot keeps the file).

    Never fails the launch: without a failsafe the VM is still watched by maider, and the history says so.
    """
    state = state_of(session)
    if state.get("token_id") or state.get("enabled") is False:
        return
    settings = load_settings(session.workdir) if session.workdir else load_settings()
    if not settings.failsafe:
        _save(session, {"enabled": False})
        record_event(session, "note", "failsafe off (FAILSAFE=off): only maider on this laptop can stop this VM")
        return
    minutes = rules.silence_minutes(settings.failsafe_minutes, session.idle_timeout_minutes)
    limits = limits_for(session, minutes, now)
    expiry = rules.token_expiry(now, limits.started_at, session.max_lifetime_hours, settings.max_lifetime_hours,
                                limits.silence_minutes)
    try:
        _install(session, provider, remote, limits, expiry, now)
    except NoFailsafeNeeded as exc:
        _save(session, {"enabled": False, "problem": str(exc)[:200]})
        record_event(session, "note", str(exc)[:300])
        return
    except (ProviderError, RemoteError) as exc:
        problem = ("the provider refused to mint its token: a token can only mint tokens with scopes it has itself "
                   "(Linodes read/write)" if isinstance(exc, AuthError) else str(exc))[:200]
        _save(session, {"enabled": False, "problem": problem})
        record_event(session, "warning", f"failsafe not armed ({problem}): only maider on this laptop can stop this "
                                         "VM (FAILSAFE=off silences this)")
        return
    record_event(session, "stage", f"failsafe armed: this VM deletes itself if maider is silent for {minutes} min",
                 token_expires_at=expiry.isoformat(timespec="seconds"))


def _install(session: Session, provider: Provider, remote: RemoteHost, limits: rules.Limits, expiry: datetime,
             now: datetime, armed_at: datetime | None = None) -> None:
    """Mint a token and write the configuration; a token the VM never got is revoked at once."""
    token = provider.mint_session_token(f"{session.label}-failsafe", expiry)
    config = rules.vm_config(instance_id=session.instance_id or "", api_url=token.api_url,
                             token=token.token.reveal(), limits=limits, armed_at=armed_at or now,
                             written_at=now)
    try:
        result = remote.run(vm.CMD_WRITE_FAILSAFE, stdin=json.dumps(config).encode(), timeout=30)
        if result.exit_code != 0:
            raise RemoteError(f"writing the failsafe's configuration returned {result.exit_code}")
    except RemoteError:
        _revoke_quietly(provider, token.id)
        raise
    previous = state_of(session).get("token_id")
    _save(session, {**state_of(session), "enabled": True, "token_id": token.id,
                    "expires_at": expiry.isoformat(timespec="seconds"), "silence_minutes": limits.silence_minutes,
                    "armed_at": (armed_at or now).isoformat(timespec="seconds"),
                    "heartbeat_at": now.isoformat(timespec="seconds"),
                    "deadline_at": rules.silence_deadline(now, limits).isoformat(timespec="seconds")})
    if previous and previous != token.id:
        _revoke_quietly(provider, previous)


def beat(session: Session, remote: RemoteHost, now: datetime) -> None:
    """Tell the VM maider is alive (at every monitor tick); an extend also restarts the VM's idle clock."""
    state = state_of(session)
    if not state.get("token_id"):
        return
    remote.run(vm.CMD_TOUCH_HEARTBEAT, timeout=20)
    state["heartbeat_at"] = now.isoformat(timespec="seconds")
    state["deadline_at"] = (now + timedelta(minutes=int(state.get("silence_minutes") or 0))).isoformat(
        timespec="seconds")
    _save(session, state)


def renew_if_due(session: Session, provider: Provider, remote: RemoteHost, now: datetime) -> None:
    """Replace a token that runs out soon (the session lives on), or re-arm after an extend (moves the VM's clock)."""
    state = state_of(session)
    if not state.get("token_id"):
        return
    minutes = int(state.get("silence_minutes") or rules.DEFAULT_SILENCE_MINUTES)
    limits = limits_for(session, minutes, now)
    expires_at = datetime.fromisoformat(state["expires_at"])
    extended = state.pop("extend_requested", None)
    if not extended and not rules.needs_renewal(now, expires_at, rules.lifetime_end(limits), limits.silence_minutes):
        return
    settings = load_settings(session.workdir) if session.workdir else load_settings()
    expiry = rules.token_expiry(now, limits.started_at, session.max_lifetime_hours, settings.max_lifetime_hours,
                                limits.silence_minutes)
    _save(session, state)
    try:
        _install(session, provider, remote, limits, expiry, now)
    except NoFailsafeNeeded as exc:
        _save(session, {"enabled": False, "problem": str(exc)[:200]})
        record_event(session, "note", str(exc)[:300])
        return
    except (ProviderError, RemoteError) as exc:
        log.info("failsafe: %s: could not renew (%s); retrying at the next tick", session.name, exc)
        if extended:
            _save(session, {**state_of(session), "extend_requested": extended})
        return
    if extended:
        record_event(session, "note", "failsafe clock reset on the VM (extend)")
    else:
        record_event(session, "note", f"failsafe token renewed (expires {expiry.isoformat(timespec='minutes')})")


def request_extend(session: Session, now: datetime) -> None:
    """``maider extend``: the monitor re-arms the VM at its next tick, restarting the VM's idle clock too."""
    state = state_of(session)
    if state.get("token_id"):
        _save(session, {**state, "extend_requested": now.isoformat(timespec="seconds")})


def revoke(session: Session, provider: Provider) -> None:
    """The session ended: its token goes (a failure is recorded; the token expires on its own anyway)."""
    state = state_of(session)
    token_id = state.get("token_id")
    if not token_id:
        return
    try:
        provider.revoke_session_token(token_id)
    except NotFound:
        pass
    except ProviderError as exc:
        record_event(session, "warning", f"could not revoke the failsafe's token {token_id} ({exc}); it expires "
                                         f"at {state.get('expires_at')} UTC")
        return
    _save(session, {**state, "token_id": None, "revoked_token_id": token_id})
    record_event(session, "action", f"failsafe token {token_id} revoked")


def _revoke_quietly(provider: Provider, token_id: str) -> None:
    try:
        provider.revoke_session_token(token_id)
    except ProviderError as exc:
        log.warning("failsafe: could not revoke token %s (%s)", token_id, exc)


def explain_vanished(session: Session, provider: Provider, now: datetime) -> tuple[str, datetime] | None:
    """For a VM found gone: (why the failsafe deleted it, when) -- None when no failsafe was armed on it, or none of
    its rules could have fired yet.

    The time comes from the provider's record of the deletion when it has one, else from the rule that fired first.
    """
    state = state_of(session)
    if not (state.get("token_id") or state.get("revoked_token_id")):
        return None
    minutes = int(state.get("silence_minutes") or rules.DEFAULT_SILENCE_MINUTES)
    heartbeat = datetime.fromisoformat(state["heartbeat_at"]) if state.get("heartbeat_at") else None
    explained = rules.explain_end(now, heartbeat, limits_for(session, minutes, now))
    if explained is None:
        return None
    why, when = explained
    try:
        recorded = provider.deleted_at(session.instance_id or "")
    except ProviderError:
        recorded = None
    return why, recorded or when

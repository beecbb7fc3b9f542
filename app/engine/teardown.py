"""Destroy step: delete the VM and keep the session until the provider confirms it is gone (a 404).

If the API is unreachable the session stays in ``destroying`` ("destroy pending") and is retried with backoff:
local state is never dropped before the provider confirms, because a forgotten VM keeps billing.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from app.engine import failsafe
from app.engine.identity import remove_identity
from app.engine.session_tunnels import close_tunnel
from app.engine.state import record_event, transition
from app.engine.steps import StepContext
from app.models import Reason, SessionState
from app.providers.base import AuthError, NotFound, ProviderError

log = logging.getLogger(__name__)

# Reasons that end as "destroyed"; any other reason means the session failed and the VM was cleaned up after it.
_INTENDED = {Reason.USER_REQUESTED.value, Reason.WATCHDOG_IDLE.value, Reason.MAX_LIFETIME.value,
             Reason.BUDGET_EXCEEDED.value, Reason.FORCED_CLEANUP.value, Reason.VANISHED.value, Reason.FAILSAFE.value}
WARN_AFTER_ATTEMPTS = 5


def _find_by_label(ctx: StepContext) -> str | None:
    """A crash between the create call and saving its id leaves no id: look the VM up by its unique label."""
    provider = ctx.runtime.provider_for(ctx.session)
    for instance in provider.list_owned():
        if instance.label == ctx.session.label:
            return instance.id
    return None


def _retry(ctx: StepContext, exc: ProviderError) -> None:
    session = ctx.session
    session.destroy_attempts += 1
    delay = min(2 ** session.destroy_attempts, ctx.timings.destroy_retry_max.total_seconds())
    session.next_attempt_at = ctx.now + timedelta(seconds=delay)
    session.stage_detail = f"destroy pending: {exc}"[:200]
    message = f"could not confirm deletion (attempt {session.destroy_attempts}): {exc}"
    if session.destroy_attempts >= WARN_AFTER_ATTEMPTS:
        message += (f" — the VM {session.instance_id} may still be billing; maider keeps retrying, and you can "
                    "check the provider's console")
        log.error("session %s: %s", session.name, message)
    record_event(session, "warning", message)


def step_destroying(ctx: StepContext) -> None:
    """Delete (idempotent), then confirm with a get that answers 404."""
    session = ctx.session
    close_tunnel(ctx.runtime, session)
    ctx.runtime.drop_remote(session.uid)
    try:
        if session.instance_id is None:
            session.instance_id = _find_by_label(ctx)
        if session.instance_id is not None:
            provider = ctx.runtime.provider_for(session)
            provider.delete(session.instance_id)
            try:
                provider.get(session.instance_id)
            except NotFound:
                pass
            else:
                session.destroy_attempts += 1
                session.next_attempt_at = ctx.now + timedelta(seconds=min(2 ** session.destroy_attempts, 30))
                session.stage_detail = "waiting for the provider to finish deleting"
                return
        release = getattr(ctx.runtime.provider_for(session), "release_label", None)
        if release is not None:  # the session's SSH key, key pair or security group, found by its label
            release(session.label)
    except ProviderError as exc:
        if isinstance(exc, AuthError):  # the user may fix the token while we retry: read it again next time
            ctx.runtime.forget_provider(session.provider, session.workdir)
        _retry(ctx, exc)
        return
    session.destroyed_at = session.destroyed_at or ctx.now
    failsafe.revoke(session, ctx.runtime.provider_for(session))
    remove_identity(ctx.runtime.home, session.uid)
    if session.instance_id:
        record_event(session, "stage", f"provider confirmed VM {session.instance_id} is deleted")
    reason = Reason(session.status_reason) if session.status_reason else Reason.USER_REQUESTED
    target = SessionState.DESTROYED if reason.value in _INTENDED else SessionState.FAILED
    transition(session, target, reason=reason, message=session.status_message, now=ctx.now)

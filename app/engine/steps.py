"""What every provisioning step shares: its context, adaptive polling, deadlines and the launch-failure rule."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.engine.identity import SessionIdentity, ensure_identity
from app.engine.runtime import EngineRuntime
from app.engine.state import transition
from app.models import Reason, Session, SessionState
from app.remote import HostKeyMismatch, RemoteError, RemoteHost

BACKOFF_FACTOR = 1.6
log = logging.getLogger(__name__)


@dataclass
class StepContext:
    session: Session
    runtime: EngineRuntime
    now: datetime

    @property
    def timings(self):
        return self.runtime.timings

    def identity(self) -> SessionIdentity:
        return ensure_identity(self.runtime.home, self.session.uid)

    def remote(self) -> RemoteHost:
        """The session's SSH connection with the pinned host key (raises RemoteError subclasses)."""
        return self.runtime.remote(*remote_target(self.session, self.identity()))


def remote_target(session: Session, identity: SessionIdentity) -> tuple[str, str, int, str, str]:
    """Arguments for ``EngineRuntime.remote``, as plain values another thread may keep."""
    return (session.uid, session.ssh_host or "", session.ssh_port, identity.host_public, identity.client_private)


def poll_later(ctx: StepContext, detail: str | None = None, first: timedelta | None = None) -> None:
    """Come back soon, then less and less often (fast at first, backing off to ``poll_max``)."""
    session = ctx.session
    base = (first or ctx.timings.poll_first).total_seconds()
    delay = min(base * BACKOFF_FACTOR ** session.poll_count, ctx.timings.poll_max.total_seconds())
    session.poll_count += 1
    session.next_attempt_at = ctx.now + timedelta(seconds=delay)
    if detail is not None:
        session.stage_detail = detail[:200]


def retry_after(ctx: StepContext, seconds: float, detail: str | None = None) -> None:
    ctx.session.next_attempt_at = ctx.now + timedelta(seconds=max(seconds, 0.0))
    if detail is not None:
        ctx.session.stage_detail = detail[:200]


def deadline_passed(ctx: StepContext, limit: timedelta) -> bool:
    """True once the current stage has waited longer than ``limit`` (the deadline is stored in the row)."""
    session = ctx.session
    if session.deadline_at is None:
        session.deadline_at = (session.stage_started_at or ctx.now) + limit
    return ctx.now >= session.deadline_at


def fail_launch(ctx: StepContext, reason: Reason, message: str) -> None:
    """A launch failed: destroy the VM (and confirm it) unless the user asked to keep it for debugging."""
    session = ctx.session
    vm_may_exist = session.instance_id is not None or session.state != SessionState.REQUESTED
    if vm_may_exist and not session.keep_on_failure:
        transition(session, SessionState.DESTROYING, reason=reason, message=message, now=ctx.now)
    else:
        if vm_may_exist:
            message += " The VM was kept for debugging and is still billed: destroy it when you are done."
        transition(session, SessionState.FAILED, reason=reason, message=message, now=ctx.now)


def connection_lost(ctx: StepContext, exc: RemoteError, detail: str) -> None:
    """SSH failed mid-step: drop the connection and try again soon -- except a foreign host key during a launch,
    which is refused for good (the VM is not the one maider made)."""
    ctx.runtime.drop_remote(ctx.session.uid)
    if isinstance(exc, HostKeyMismatch) and ctx.session.state.is_launching():
        fail_launch(ctx, Reason.HOST_KEY_MISMATCH,
                    f"the VM presented an SSH host key that maider did not issue ({exc}); refusing to connect")
        return
    log.info("session %s: %s (%s)", ctx.session.name, detail, exc)
    poll_later(ctx, detail)

"""The OpenAI-compatible proxy's rules: which session a teammate's request reaches, with which key, and what it
counts. The VM's own API key never leaves this process; each user authenticates with their own proxy key, and
their requests and tokens are counted per session.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.domain.openai_stream import Usage
from app.engine.identity import load_identity
from app.extensions import db
from app.models import ProxyUsage, Session, SessionState, User, utcnow
from app.services import users as users_service
from app.services.sessions import get_session


class ProxyRefused(Exception):
    """An OpenAI-style error for the client: HTTP ``status``, and ``code`` for programs."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Target:
    session_id: int
    base_url: str  # the session's tunnelled vLLM, e.g. http://127.0.0.1:8051/v1
    api_key: str  # the VM's key
    served_name: str


def authenticate(authorization: str) -> User:
    scheme, _, key = (authorization or "").partition(" ")
    user = users_service.user_for_api_key(key.strip()) if scheme.lower() == "bearer" else None
    if user is None:
        raise ProxyRefused(401, "invalid_api_key", "Missing or wrong maider API key. Create yours on a session page "
                                                   "(My API key) or ask an admin: 'maider user key NAME'.")
    return user


def target(name: str, home: Path) -> Target:
    """Where the request goes; refuses at once (no hang) when the session cannot serve now."""
    try:
        session = get_session(name)
    except Exception:  # NotFoundError, or a malformed name
        raise ProxyRefused(404, "session_not_found", f"No maider session named '{name}'.") from None
    if session.state != SessionState.READY or not session.api_port:
        raise ProxyRefused(503, "session_not_ready",
                           f"Session '{name}' is {session.state.label.lower()}, not ready: try again once it is ready.")
    if session.tunnel_state != "up":
        raise ProxyRefused(503, "tunnel_down", f"Session '{name}' is ready but its tunnel is {session.tunnel_state}; "
                                               "maider is reconnecting it: try again in a few seconds.")
    return Target(session.id, f"http://127.0.0.1:{session.api_port}/v1", _vm_api_key(str(home), session.uid),
                  session.served_name)


@lru_cache(maxsize=256)
def _vm_api_key(home: str, uid: str) -> str:
    """A session's key never changes; reading its files on every proxied request would cost a disk read each."""
    return load_identity(Path(home), uid).api_key


def mark_activity(session_id: int) -> None:
    """A proxied request is use: the idle watchdog must not destroy a VM a teammate is working with."""
    db.session.execute(sa.update(Session).where(Session.id == session_id).values(last_activity_at=utcnow()))
    db.session.commit()


def record_usage(session_id: int, user_name: str, usage: Usage | None, failed: bool) -> None:
    """Add one request (and its tokens, when the server reported them) to the user's row for this session."""
    try:
        _add_usage(session_id, user_name, usage, failed)
    except IntegrityError:  # two first requests of one user at once: the other one made the row
        db.session.rollback()
        _add_usage(session_id, user_name, usage, failed)


def _add_usage(session_id: int, user_name: str, usage: Usage | None, failed: bool) -> None:
    row = db.session.scalar(sa.select(ProxyUsage).where(ProxyUsage.session_id == session_id,
                                                        ProxyUsage.user_name == user_name))
    if row is None:
        row = ProxyUsage(session_id=session_id, user_name=user_name, requests=0, errors=0, prompt_tokens=0,
                         completion_tokens=0)
        db.session.add(row)
    row.requests += 1
    row.errors += 1 if failed else 0
    if usage is not None:
        row.prompt_tokens += usage.prompt_tokens
        row.completion_tokens += usage.completion_tokens
    row.last_request_at = utcnow()
    db.session.commit()


def usage_for(session: Session) -> list[ProxyUsage]:
    return list(db.session.scalars(sa.select(ProxyUsage).where(ProxyUsage.session_id == session.id)
                                   .order_by(ProxyUsage.completion_tokens.desc(), ProxyUsage.user_name)))

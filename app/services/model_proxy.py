"""The OpenAI-compatible proxy's rules: which session a teammate's request reaches, with which key, and what it
counts. The VM's own API key never leaves this process; each user authenticates with their own proxy key, and
their requests and tokens are counted per session.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import threading
import time

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from app.domain.openai_stream import Usage
from app.engine.identity import load_identity
from app.extensions import db
from app.models import ProxyUsage, Session, SessionState, utcnow
from app.services import users as users_service


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


def authenticate(authorization: str) -> users_service.KeyHolder:
    scheme, _, key = (authorization or "").partition(" ")
    user = users_service.holder_of_api_key(key.strip()) if scheme.lower() == "bearer" else None
    if user is None:
        raise ProxyRefused(401, "invalid_api_key", "Missing or wrong maider API key. Create yours on a session page "
                                                   "(My API key) or ask an admin: 'maider user key NAME'.")
    return user


def target(name: str, home: Path) -> Target:
    """Where the request goes; refuses at once (no hang) when the session cannot serve now."""
    # Only the columns the proxy needs, and the live row first: this runs on every proxied request.
    row = db.session.execute(
        sa.select(Session.id, Session.uid, Session.status, Session.api_port, Session.tunnel_state, Session.served_name)
        .where(Session.name == name).order_by(Session.destroyed_at.is_not(None), Session.id.desc()).limit(1)).first()
    if row is None:
        raise ProxyRefused(404, "session_not_found", f"No maider session named '{name[:64]}'.")
    if row.status != SessionState.READY.value or not row.api_port:
        label = SessionState(row.status).label.lower()
        raise ProxyRefused(503, "session_not_ready", f"Session '{name}' is {label}, not ready: try again once it is "
                                                     "ready.")
    if row.tunnel_state != "up":
        raise ProxyRefused(503, "tunnel_down", f"Session '{name}' is ready but its tunnel is {row.tunnel_state}; "
                                               "maider is reconnecting it: try again in a few seconds.")
    return Target(row.id, f"http://127.0.0.1:{row.api_port}/v1", _vm_api_key(str(home), row.uid), row.served_name)


@lru_cache(maxsize=256)
def _vm_api_key(home: str, uid: str) -> str:
    """A session's key never changes; reading its files on every proxied request would cost a disk read each."""
    return load_identity(Path(home), uid).api_key


class UsageBook:
    """Per-user counts kept in memory and written in batches: a database write per proxied request would cost more
    than the proxy itself. Flushed at most every ``FLUSH_S``, whenever a page reads usage, and at shutdown; the
    idle watchdog's activity mark is written at most every ``ACTIVITY_S`` per session."""

    FLUSH_S = 2.0
    ACTIVITY_S = 5.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.flush_lock = threading.Lock()
        self._pending: dict[tuple[int, str], list] = {}  # (session, user) -> [requests, errors, in, out, last]
        self._flushed_at = time.monotonic()
        self._activity_at: dict[int, float] = {}

    def add(self, session_id: int, user_name: str, usage: Usage | None, failed: bool) -> bool:
        """Count one request; True when it is time to flush."""
        with self._lock:
            entry = self._pending.setdefault((session_id, user_name), [0, 0, 0, 0, None])
            entry[0] += 1
            entry[1] += 1 if failed else 0
            if usage is not None:
                entry[2] += usage.prompt_tokens
                entry[3] += usage.completion_tokens
            entry[4] = utcnow()
            return time.monotonic() - self._flushed_at >= self.FLUSH_S

    def put_back(self, pending: dict[tuple[int, str], list]) -> None:
        with self._lock:
            for key, counts in pending.items():
                entry = self._pending.setdefault(key, [0, 0, 0, 0, None])
                for i in range(4):
                    entry[i] += counts[i]
                entry[4] = max(filter(None, (entry[4], counts[4])), default=None)

    def take(self) -> dict[tuple[int, str], list]:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flushed_at = time.monotonic()
            return pending

    def activity_due(self, session_id: int) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._activity_at.get(session_id, -self.ACTIVITY_S) < self.ACTIVITY_S:
                return False
            self._activity_at[session_id] = now
            return True


DEFAULT_SLOTS = 12  # of the server's 16 threads: the panel, the CLI and destroy always keep some


def take_slot() -> threading.BoundedSemaphore:
    """A place for one proxied request; 429 when every place is taken, so long streams can never take every server
    thread from the panel and the CLI. The caller releases it."""
    slots = current_app.extensions.get("maider_proxy_slots")
    if slots is None:
        size = int(current_app.config.get("MAIDER_PROXY_SLOTS", DEFAULT_SLOTS))
        slots = current_app.extensions.setdefault("maider_proxy_slots", threading.BoundedSemaphore(size))
    if not slots.acquire(blocking=False):
        raise ProxyRefused(429, "too_many_requests", "Too many requests through maider's proxy at once; try again "
                                                     "in a moment.")
    return slots


def _book() -> UsageBook:
    return current_app.extensions.setdefault("maider_usage_book", UsageBook())


def mark_activity(session_id: int) -> None:
    """A proxied request is use: the idle watchdog must not destroy a VM a teammate is working with."""
    if _book().activity_due(session_id):
        db.session.execute(sa.update(Session).where(Session.id == session_id).values(last_activity_at=utcnow()))
        db.session.commit()


def record_usage(session_id: int, user_name: str, usage: Usage | None, failed: bool) -> None:
    """Count one request (and its tokens, when the server reported them) for the user on this session."""
    if _book().add(session_id, user_name, usage, failed):
        flush_usage()


def flush_usage() -> None:
    """Write the counted requests to the database (one flush at a time; counts go back if the write fails)."""
    book = _book()
    with book.flush_lock:
        pending = book.take()
        try:
            for (session_id, user_name), counts in pending.items():
                _add_usage(session_id, user_name, counts)
            db.session.commit()
        except SQLAlchemyError:
            db.session.rollback()
            book.put_back(pending)
            raise


def _add_usage(session_id: int, user_name: str, counts: list) -> None:
    """One upsert that adds in SQL, so no count is lost between a read and a write."""
    requests, errors, prompt_tokens, completion_tokens, last_at = counts
    insert = sqlite_insert(ProxyUsage).values(session_id=session_id, user_name=user_name, requests=requests,
                                              errors=errors, prompt_tokens=prompt_tokens,
                                              completion_tokens=completion_tokens, last_request_at=last_at)
    db.session.execute(insert.on_conflict_do_update(
        index_elements=["session_id", "user_name"],
        set_={"requests": ProxyUsage.requests + insert.excluded.requests,
              "errors": ProxyUsage.errors + insert.excluded.errors,
              "prompt_tokens": ProxyUsage.prompt_tokens + insert.excluded.prompt_tokens,
              "completion_tokens": ProxyUsage.completion_tokens + insert.excluded.completion_tokens,
              "last_request_at": insert.excluded.last_request_at}))


def usage_for(session: Session) -> list[ProxyUsage]:
    """Per-user usage of a session, newest counts included."""
    flush_usage()
    return list(db.session.scalars(sa.select(ProxyUsage).where(ProxyUsage.session_id == session.id)
                                   .order_by(ProxyUsage.completion_tokens.desc(), ProxyUsage.user_name)))

"""Panel users: the owner, invited teammates, their roles, passwords, lock-outs and proxy API keys.

Only hashes are stored: passwords with Werkzeug's scrypt, invite tokens and API keys with SHA-256 (they are 256-bit
random strings, so a fast hash loses nothing and keeps the proxy's per-request lookup cheap). Every change is an
Event with the acting user, so the audit log says who added or removed whom.
"""
from __future__ import annotations

import getpass
import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from flask import current_app
from werkzeug.security import check_password_hash, generate_password_hash

from app.engine.state import record_event
from app.errors import ConflictError, NotFoundError, UserError
from app.extensions import db
from app.models import ApiKey, Invite, Role, User, utcnow

USER_NAME_RE = re.compile(r"[a-z][a-z0-9_.-]{0,39}")
INVITE_LIFETIME = timedelta(hours=24)
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256
LOCK_AFTER_FAILURES = 10
FAILURE_WINDOW = timedelta(minutes=1)
LOCK_DURATION = timedelta(minutes=5)
API_KEY_PREFIX = "mk-"
# A hash to compare against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not a password of anyone")


class LoginRefused(UserError):
    """Wrong name or password, or a locked account; the message says which without telling names apart."""


@dataclass(frozen=True)
class NewInvite:
    user: User
    token: str  # shown once, in the invite URL


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    name = (name or "").strip().lower()
    if not USER_NAME_RE.fullmatch(name):
        raise UserError("a user name is 1 to 40 characters: a lowercase letter first, then letters, digits, "
                        "'.', '_' or '-'")
    return name


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise UserError(f"role must be one of: {', '.join(r.value for r in Role)}") from None


def get_user(name: str) -> User:
    user = db.session.scalar(sa.select(User).where(User.name == name))
    if user is None:
        raise NotFoundError(f"no user named '{name}' (see 'maider user list')")
    return user


def user_by_id(user_id: int) -> User | None:
    return db.session.get(User, user_id)


def list_users() -> list[User]:
    return list(db.session.scalars(sa.select(User).order_by(User.is_owner.desc(), User.name)))


def has_teammates() -> bool:
    """True once someone other than the owner may sign in (``--share`` needs that)."""
    return bool(db.session.scalar(sa.select(sa.func.count(User.id)).where(User.is_owner.is_(False))))


def ensure_owner(name: str | None = None) -> User:
    """The laptop owner's user row (admin, no password), created on first start."""
    owner = db.session.scalar(sa.select(User).where(User.is_owner.is_(True)))
    if owner is not None:
        return owner
    base = re.sub(r"[^a-z0-9_.-]", "", (name or getpass.getuser() or "owner").lower())[:32] or "owner"
    if not base[0].isalpha():
        base = f"u{base}"[:32]
    candidate, number = base, 1
    while db.session.scalar(sa.select(User.id).where(User.name == candidate)) is not None:
        number += 1
        candidate = f"{base}{number}"
    owner = User(name=candidate, role=Role.ADMIN.value, is_owner=True, created_by="maider")
    db.session.add(owner)
    try:
        db.session.commit()
    except IntegrityError:  # two first requests at once: the other one made the owner
        db.session.rollback()
        return db.session.scalars(sa.select(User).where(User.is_owner.is_(True))).one()
    return owner


def add_user(name: str, role: str, actor: str, now: datetime | None = None) -> NewInvite:
    """Create a user who chooses a password through a single-use invite link (valid 24 h)."""
    name = check_name(name)
    checked_role = check_role(role)
    if db.session.scalar(sa.select(User.id).where(User.name == name)) is not None:
        raise ConflictError(f"a user named '{name}' exists already; remove them first, or pick another name")
    user = User(name=name, role=checked_role.value, created_by=actor)
    db.session.add(user)
    db.session.flush()
    token = _new_invite(user, now)
    record_event(None, "user", f"Added {name} as {checked_role.value}", actor=actor, user=name,
                 role=checked_role.value)
    db.session.commit()
    return NewInvite(user, token)


def reinvite(name: str, actor: str, now: datetime | None = None) -> NewInvite:
    """A fresh invite (the old ones stop working), e.g. for a teammate who forgot their password."""
    user = get_user(name)
    if user.is_owner:
        raise UserError("the owner signs in with 'maider open', not with a password")
    for invite in user.invites:
        if invite.used_at is None:
            invite.used_at = now or utcnow()
    token = _new_invite(user, now)
    record_event(None, "user", f"New invite for {name}", actor=actor, user=name)
    db.session.commit()
    return NewInvite(user, token)


def _new_invite(user: User, now: datetime | None) -> str:
    token = secrets.token_urlsafe(32)
    now = now or utcnow()
    db.session.add(Invite(user=user, token_hash=token_hash(token), created_at=now, expires_at=now + INVITE_LIFETIME))
    return token


def pending_invite(token: str, now: datetime | None = None) -> Invite:
    """The unused, unexpired invite for ``token``; UserError with what to do otherwise."""
    invite = db.session.scalar(sa.select(Invite).where(Invite.token_hash == token_hash(token or "")))
    now = now or utcnow()
    if invite is None or invite.used_at is not None:
        raise UserError("this invite link is not valid or was used already: ask an admin for a new one "
                        "('maider user invite NAME')")
    if invite.expires_at <= now:
        raise UserError("this invite link expired (they last 24 hours): ask an admin for a new one "
                        "('maider user invite NAME')")
    return invite


def accept_invite(token: str, password: str, confirm: str, now: datetime | None = None) -> User:
    """Set the invited user's password; the invite is spent."""
    invite = pending_invite(token, now)
    check_password(password, confirm)
    user = invite.user
    invite.used_at = now or utcnow()
    user.password_hash = generate_password_hash(password)
    user.session_nonce = secrets.token_hex(16)
    user.failed_logins = 0
    user.locked_until = None
    record_event(None, "user", f"{user.name} accepted the invite and chose a password", actor=user.name)
    db.session.commit()
    return user


def check_password(password: str, confirm: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise UserError(f"choose a password of at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"a password is at most {MAX_PASSWORD_LENGTH} characters")
    if password != confirm:
        raise UserError("the two passwords differ; type the same password twice")


def authenticate(name: str, password: str, now: datetime | None = None) -> User:
    """The user whose password this is. Ten failures within a minute lock the account for five minutes."""
    now = now or utcnow()
    user = db.session.scalar(sa.select(User).where(User.name == (name or "").strip().lower()))
    if user is not None and user.locked_until is not None and user.locked_until > now:
        minutes = max(1, round((user.locked_until - now).total_seconds() / 60))
        raise LoginRefused(f"too many wrong passwords for this account: it is locked for {minutes} more "
                           f"minute{'s' if minutes != 1 else ''}. Try again later, or ask an admin for a new invite.")
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    if check_password_hash(stored, password or "") and user is not None and user.password_hash:
        user.failed_logins = 0
        user.failed_window_started_at = None
        user.locked_until = None
        user.last_login_at = now
        db.session.commit()
        return user
    if user is not None:
        _count_failure(user, now)
    raise LoginRefused("wrong user name or password")


def _count_failure(user: User, now: datetime) -> None:
    if user.failed_window_started_at is None or now - user.failed_window_started_at > FAILURE_WINDOW:
        user.failed_window_started_at = now
        user.failed_logins = 0
    user.failed_logins += 1
    if user.failed_logins >= LOCK_AFTER_FAILURES:
        user.locked_until = now + LOCK_DURATION
        user.failed_logins = 0
        user.failed_window_started_at = None
        record_event(None, "user", f"Locked {user.name} for 5 minutes after {LOCK_AFTER_FAILURES} wrong passwords "
                     "in a minute", actor="maider", user=user.name)
        db.session.commit()
        raise LoginRefused("too many wrong passwords for this account: it is locked for 5 minutes. Try again later, "
                           "or ask an admin for a new invite.")
    db.session.commit()


def end_sessions(user: User) -> None:
    """Void every browser session of ``user`` (sign-out signs out everywhere)."""
    user.session_nonce = secrets.token_hex(16)
    db.session.commit()


def set_role(name: str, role: str, actor: str) -> User:
    user = get_user(name)
    checked = check_role(role)
    if user.is_owner:
        raise UserError("the owner is always an admin")
    if user.role != checked.value:
        user.role = checked.value
        user.session_nonce = secrets.token_hex(16)  # signed-in browsers pick the new role up at their next sign-in
        record_event(None, "user", f"{name} is now {checked.value}", actor=actor, user=name, role=checked.value)
        db.session.commit()
    return user


def remove_user(name: str, actor: str) -> None:
    """Remove a teammate: their browser sessions, invites and API keys stop working at once."""
    user = get_user(name)
    if user.is_owner:
        raise UserError("the owner cannot be removed")
    db.session.delete(user)
    record_event(None, "user", f"Removed {name}", actor=actor, user=name)
    db.session.commit()
    _forget_keys()


def create_api_key(user: User, actor: str) -> str:
    """A new proxy key for ``user`` (replacing any older one); the plain key is returned once and never stored."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    for old in list(user.api_keys):
        db.session.delete(old)
    db.session.add(ApiKey(user=user, key_hash=token_hash(key), prefix=key[:10]))
    record_event(None, "user", f"New proxy API key for {user.name}", actor=actor, user=user.name)
    db.session.commit()
    _forget_keys()
    return key


@dataclass(frozen=True)
class KeyHolder:
    user_id: int
    name: str


class _KeyCache:
    """Proxy keys checked recently: digest -> holder, one per app. Every change to keys or users goes through the
    server process (the CLI and the panel both talk to it); each change, once committed, empties the cache and bumps
    the generation, and a lookup that raced with a change does not cache what it read: a removed key stops at once."""

    MAX = 1024

    def __init__(self) -> None:
        self.holders: dict[str, KeyHolder] = {}
        self.generation = 0
        self.lock = threading.Lock()

    def forget(self) -> None:
        with self.lock:
            self.generation += 1
            self.holders.clear()

    def store(self, digest: str, holder: KeyHolder, generation: int) -> None:
        """Remember ``holder`` unless a change happened since the lookup began (then it may be stale)."""
        with self.lock:
            if self.generation != generation:
                return
            if len(self.holders) >= self.MAX:
                self.holders.clear()
            self.holders[digest] = holder


def _key_cache() -> _KeyCache:
    return current_app.extensions.setdefault("maider_key_cache", _KeyCache())


def _forget_keys() -> None:
    _key_cache().forget()


def holder_of_api_key(key: str) -> KeyHolder | None:
    """Who a proxy key belongs to, or None (wrong, replaced or removed). Cached: the proxy asks on every request."""
    if not key.startswith(API_KEY_PREFIX) or len(key) > 128:
        return None
    digest = token_hash(key)
    cache = _key_cache()
    cached = cache.holders.get(digest)
    if cached is not None:
        return cached
    generation = cache.generation
    row = db.session.execute(sa.select(ApiKey.key_hash, User.id, User.name).join(User, ApiKey.user_id == User.id)
                             .where(ApiKey.key_hash == digest)).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    holder = KeyHolder(row.id, row.name)
    cache.store(digest, holder, generation)
    return holder


def api_key_prefix(user: User) -> str | None:
    return user.api_keys[0].prefix if user.api_keys else None
